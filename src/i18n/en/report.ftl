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
r-wireshark-label = Wireshark, { $vantage }
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
r-more-ids = … and { $n } more
r-more-findings = … and { $n } more { $kind } findings (see --format json)
r-more-rows = … and { $n } more (see --format json)

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
h-left-out = { $n } more connections are not drawn (at most { $max } timelines, those with findings first);
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

## HTML timeline (the SVG: hover texts, labels, summaries)

t-who = the { $side } side ({ $addr })
t-syn = SYN from { $who }
t-synack = SYN-ACK from { $who }
t-data = { $len } bytes of data from { $who }
t-end-from = { $word } from { $who }
t-label-end = { $word } from { $side }
t-retrans = retransmission from the { $side } side: { $len } bytes at relative seq { $seq }
t-termination = { $word } from { $who }, TTL { $ttl }, IP ID { $ipid }, window { $window }
t-term-usual = ; the sender's other packets: TTL { $ttl }, IP IDs { $pattern }
t-term-after = ; after { $secs } of silence
t-ipid-none = none
t-ipid-zero = zero
t-ipid-incrementing = incrementing
t-ipid-random = random
t-upgrade-ok = HTTP 101 Switching Protocols: the WebSocket upgrade
t-upgrade-refused = HTTP { $code }: the upgrade was refused
t-heartbeat = { $kind } heartbeat { $i } of { $n } from the { $side } side{ $interval } (median { $median })
t-heartbeat-interval = , { $secs } after the previous beat
t-sip-register = SIP { $word } from the { $side } side (CSeq { $cseq }){ $answer }
t-sip-answered = , answered { $code } after { $secs }
t-sip-lost = , never answered: the connection died
t-sip-no-answer = , no answer seen
t-sip-invite = SIP INVITE from the { $side } side, call { $call }{ $cut }
t-sip-cut = ; the call was up when the connection died (no BYE)
t-sip-ok = SIP 200 OK to the INVITE: call { $call } answered
t-sip-bye = SIP BYE from the { $side } side, call { $call }{ $reason }
t-sip-reason = , Reason: { $reason }
t-label-last = last
t-last-before = last packet before the { $secs } silence that ended the connection
t-last-open = last packet here; then { $secs } of silence until the capture ends, with no FIN or RST
t-label-reconnect = reconnect { $id }
t-reconnect = the client connects again: { $id } starts here (its SYN)
t-reconnect-after = reconnect: { $id } after { $secs }
t-end = { $word } from the { $side } side at { $vantage }
t-end-open = open at { $vantage } when its capture ends
t-idle = { $secs } idle
t-idle-open = { $secs } idle · open at capture end
t-idle-title = { $text }: no packet in either direction
t-lane-file = { $vantage } ({ $file })
t-filter = filter: { $filter }
t-frame = { $vantage } frame { $frame } · { $ts } (reference clock)
t-frame-not-kept = { $vantage } frame not kept · { $ts } (reference clock)
t-evidence-for = evidence for { $ids }
t-svg-title = { $id }: { $client }, one lane per vantage, reference clock
t-axis-from = from { $ts }
t-vantages = { $n ->
        [one] { $n } vantage
       *[other] { $n } vantages
    }
t-lived = lived { $secs } at { $vantage }

## Capture warnings (the English text is also the JSON document's and the command's stderr)

w-bad-nanos = frame { $frame } at byte { $offset }: invalid sub-second field { $ns } (≥ 10^9 ns); carried into seconds
w-duplicates = { $n } frames are byte-identical copies of a frame just before them (within 1 ms): the same packet captured twice (two interfaces, or a SPAN port copying both directions); { $first }. They are kept: packet, retransmission and duplicate-ACK counts include them
w-duplicates-first = the first is frame { $frame } at byte { $offset }, a copy of frame { $of }
w-truncated = frame { $frame } at byte { $offset }: { $why }; kept the { $kept } frames before it
w-cut-short = the last record is cut short (capture ended mid-write?)
w-reader = { $text }
w-malformed = { $n } frames could not be decoded; the first is frame { $frame } at byte { $offset }: { $why }
w-out-of-order = { $n } frames have a timestamp earlier than a frame before them
w-digests-lost = the summaries of connections that ended normally could not be read back from the temporary file ({ $error }): the diagnosis is missing some of them
w-kept-lost = the summaries of connections a rule reads whole could not be read back from the temporary file ({ $error }): the diagnosis reads those through their digests only, and cannot tell how they ended
w-samples-lost = the packet samples of some connections could not be read back from the temporary file they waited in ({ $error }): those connections cannot be lined up with another capture's by their packets
w-parked-lost = { $n } connections silent for minutes could not be read back from the temporary file they waited in ({ $error }): they are missing from the report, or appear as connections seen from mid-stream
w-finished-lost = { $n } connections that ended could not be read back from the temporary file they waited in ({ $error }): they are missing from the report
w-table-full = the connection table was full ({ $max } live): { $n } least recently active connections were summarised early, without their packet samples (a SYN flood or a very busy capture; raise the cap to keep them whole)
w-summaries-dropped = { $n } connections were counted but not kept: the report keeps at most { $max } connections per capture
w-why-ip = IP header invalid or cut short
w-why-tcp = TCP header invalid or cut short
w-why-udp = UDP header invalid or cut short
w-why-ethernet = ethernet header cut short
w-why-sll = SLL header cut short
w-why-sll2 = SLL2 header cut short
w-why-loopback = loopback header cut short
w-why-link = unsupported link type
w-why-other = { $why }
