# Report headings and fixed sentences (text, Markdown and HTML), in English.

sev-info = info
sev-warning = warning
sev-critical = critical
r-title = vantage diagnosis
r-verdict = Verdict:
r-verdict-line = Verdict: { $summary }
r-confidence = confidence { $pct } %.
r-confidence-cap = Confidence { $pct } %.
r-one-capture = One capture only: findings rest on fingerprints and timing at one point; capture at both ends for proof.
r-findings = Findings
r-no-findings = No findings.
r-col-id = id
r-col-severity = severity
r-col-kind = kind
r-col-connections = connections
r-col-summary = summary
r-col-time = time (reference, UTC)
r-col-vantage = vantage
r-col-frame = frame
r-col-what = what it shows
r-col-offset = offset to reference s
r-col-offset-short = offset s
r-col-bound = ± bound s
r-col-method = method
r-col-samples = samples
r-col-start = start (reference, UTC)
r-col-legs = legs
r-col-match = match
r-col-file = file
r-col-packets = packets
r-col-first = first (UTC)
r-col-last = last (UTC)
r-col-link-types = link types
r-col-lost-between = lost between
r-col-direction = direction
r-col-segments = segments
r-finding-head = { $id } { $kind }: { $text }
r-evidence-item = { $ts } { $vantage } frame { $frame }: { $what }
r-wireshark-line = wireshark { $vantage } ({ $file }): { $filter }
r-wireshark-md = Wireshark, { $vantage } (`{ $file }`): `{ $filter }`
r-recommendation-line = recommendation: { $text }
r-recommendation = Recommendation:
r-clock-offsets = Clock offsets
r-lined-up = Lined-up connections
r-captures = Captures
r-warning-line = warning: { $path }: { $text }
r-warning = warning:
r-reference = { $name } (reference)
r-offset-unknown = unknown
r-offset-no-traffic = no traffic shared with another capture
r-ambiguous = { $n } connection(s) had two equally good matches and were left apart.

## HTML page

h-title = vantage diagnosis: { $summary }
h-reference-clock = (reference clock)
h-single-vantage = Evidence from one capture only.
h-timelines = Timelines
h-timelines-intro = One lane per vantage for each lined-up TCP connection, on the reference clock ({ $reference }). Connections with findings are open; click a line to open or close it.
h-udp-listed = { $n ->
        [one] { $n } UDP flow (SIP trunk, RTP) is
       *[other] { $n } UDP flows (SIP trunk, RTP) are
    } listed under lined-up connections, not drawn.
h-no-tcp = No TCP connection to draw.
h-left-out = { $n } more connections without findings are not drawn (at most { $max } timelines);
h-left-out-after = shows any of them.
h-evidence = Evidence
h-match = Match
h-lanes-note = . Lanes from the client side to the server side; times on the reference clock.
h-hover = Hover over or tap a marker for its frame and display filter.
h-legend-syn = SYN (client) / SYN-ACK
h-legend-upgrade = WebSocket upgrade (101)
h-legend-heartbeat = heartbeat
h-legend-sip = SIP REGISTER / INVITE / 200 / BYE
h-legend-data = data packet (first and last ones kept)
h-legend-retrans = retransmission
h-legend-last = last packet before the silence
h-legend-reconnect = reconnect (next connection)
h-legend-idle = idle stretch before the end, with its length
h-legend-note = Above a lane's line: sent by the client side; below: by the server side.
