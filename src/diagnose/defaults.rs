//! Documented idle timeouts of middleboxes that sit in front of long-lived connections. An
//! estimated timeout is compared with this table so that a report can say "this is what an
//! AWS ALB does out of the box".

/// A middlebox's documented default idle timeout.
#[derive(Clone, Copy, Debug)]
pub struct KnownTimeout {
    pub name: &'static str,
    pub secs: f64,
    /// When the middlebox acts: `true` when its timer fires (a proxy closing both legs),
    /// `false` when the next packet after expiry meets a forgotten flow (NAT, firewall).
    pub at_timer: bool,
    /// Where the default is documented.
    pub source: &'static str,
}

pub const KNOWN_TIMEOUTS: &[KnownTimeout] = &[
    KnownTimeout {
        name: "nginx proxy_read_timeout",
        secs: 60.0,
        at_timer: true,
        source: "nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_read_timeout (default 60s)",
    },
    KnownTimeout {
        name: "nginx stream proxy_timeout",
        secs: 600.0,
        at_timer: true,
        source: "nginx.org/en/docs/stream/ngx_stream_proxy_module.html#proxy_timeout (default 10m)",
    },
    KnownTimeout {
        name: "AWS Application / Classic Load Balancer idle timeout",
        secs: 60.0,
        at_timer: true,
        source: "docs.aws.amazon.com/elasticloadbalancing/latest/application/application-load-balancers.html#connection-idle-timeout (default 60 s)",
    },
    KnownTimeout {
        name: "AWS Network Load Balancer TCP idle timeout",
        secs: 350.0,
        at_timer: false,
        source: "docs.aws.amazon.com/elasticloadbalancing/latest/network/network-load-balancers.html#connection-idle-timeout (350 s)",
    },
    KnownTimeout {
        name: "Azure Load Balancer idle timeout",
        secs: 240.0,
        at_timer: false,
        source: "learn.microsoft.com/azure/load-balancer/load-balancer-tcp-idle-timeout (default 4 minutes)",
    },
    KnownTimeout {
        name: "Alibaba Cloud CLB HTTP listener idle timeout",
        secs: 15.0,
        at_timer: true,
        source: "alibabacloud.com/help/en/slb/classic-load-balancer (HTTP listener connection idle timeout, default 15 s)",
    },
    KnownTimeout {
        name: "Alibaba Cloud CLB TCP listener idle timeout",
        secs: 900.0,
        at_timer: false,
        source: "alibabacloud.com/help/en/slb/classic-load-balancer (TCP listener connection idle timeout, default 900 s)",
    },
    KnownTimeout {
        name: "F5 BIG-IP FastL4 idle timeout",
        secs: 300.0,
        at_timer: false,
        source: "F5 K7166: the fastL4 profile's idle timeout defaults to 300 seconds",
    },
    KnownTimeout {
        name: "Linux IPVS / LVS TCP timeout",
        secs: 900.0,
        at_timer: false,
        source: "ipvsadm(8) --set: tcp timeout default 900 s",
    },
    KnownTimeout {
        name: "Cisco ASA conn timeout",
        secs: 3600.0,
        at_timer: false,
        source: "Cisco ASA command reference, timeout conn: default 1:00:00",
    },
    KnownTimeout {
        name: "Google Cloud external HTTP(S) LB backend / WebSocket timeout",
        secs: 30.0,
        at_timer: true,
        source: "cloud.google.com/load-balancing/docs/https#timeouts_and_retries (backend service timeout default 30 s, also caps WebSocket lifetime)",
    },
];

/// Known defaults compatible with an estimate: for a sharp estimate, within the larger of
/// 1 s and 5 %; for an interval, inside it (widened by the same tolerance).
pub fn matching(lower: f64, upper: f64) -> Vec<&'static KnownTimeout> {
    KNOWN_TIMEOUTS
        .iter()
        .filter(|k| {
            let tol = (k.secs * 0.05).max(1.0);
            k.secs >= lower - tol && k.secs <= upper + tol
        })
        .collect()
}
