# The diagnosis in English: verdicts, findings (summary, explanation, recommendation) and the
# evidence they cite. Numbers arrive formatted (decimal point, the rule's precision); counts
# named n, deaths, retrans... are numbers and choose plural forms.

## Shared words

empty = {""}
raw = { $v }
secs = { $s } s
list-sep = {", "}
clause-sep = {"; "}
sentence-sep = {" "}
side-client = client
side-server = server
ipid-none = none
ipid-zero = zero
ipid-incrementing = incrementing
ipid-random = random
dir-client-to-server = client to server
dir-server-to-client = server to client
hop-between = between { $a } and { $b }
hop-between-side = between { $vantage } and the { $side }
hop-beyond = beyond { $vantage }, toward the { $side }
evidence-left-out = ({ $left } more evidence items left out: --max-evidence.)
range = { $min } to { $max }
group-evidence-first = Evidence for the { $shown ->
        [one] first connection
       *[other] first { $shown } connections
    } in time of these { $n } (--max-evidence shows more; the JSON lists every connection).

## Evidence

ev-end-from-side = { $kind } from the { $side } side ({ $addr }:{ $port }), TTL { $ttl }, IP ID { $ipid }, window { $window }{ $misfit }
ev-sender-usual = ; the sender's other packets have TTL { $ttl } and IP IDs { $pattern }
ev-never-sent = here the { $side } never sent it: the first end is a { $kind } toward it, from the { $by } side
ev-last-here-no-end = last packet of this connection here; no { $kind } from the { $side }
ev-first-after-silence-answered = first packet after { $secs } s of silence, from the { $side }; the { $kind } answers it
ev-first-after-silence = first packet after { $secs } s of silence, from the { $side }
ev-rst-misfit = RST as if from the { $side }: TTL { $ttl } (its other packets: { $ttl_usual }), IP ID { $ipid } (its other packets: { $pattern }), window { $window }, { $options } options
ev-retrans-no-answer = retransmission, { $secs } s after the silence, no answer
ev-last-nothing-arrived = last packet here; nothing the { $side } sent after the silence arrived
ev-client-end = the client side's end of the connection
ev-server-holds = the server still holds the connection { $how }
ev-l7-conn = { $which } TCP connection { $src }:{ $sport } > { $dst }:{ $dport }
ev-retransmission = retransmission
ev-signalling-ends = the signalling connection ends
ev-first-answer = first answer from the server on the new connection
ev-heartbeat = { $kind } heartbeat from the { $side } side: { $count } beats, median { $median } s, p95 { $p95 } s, max { $max } s
ev-invite = INVITE of call { $call } (answered, no BYE before the connection died)
ev-gateway-bye = BYE on the gateway leg (call { $call }){ $reason }

## middlebox_reset, middlebox_close (across vantages)

mb-word-closed = closed
mb-word-reset = reset
mb-summary = { $conn }: a middlebox { $hop } { $word } the connection after { $silence } s of silence; the { $side } never sent that { $kind }
mb-summary-many = { $n } connections: a middlebox { $hop } { $word } each after { $silence } s of silence; the { $side } never sent those { $kind }s
mb-instead-received = at { $vantage } the { $side } instead received a { $kind } from the middlebox
mb-instead-quiet = { $vantage } shows no { $kind } from the { $side }: the connection simply goes quiet there
mb-explain = The { $kind } at { $vantage } arrived as if from the { $side }, but { $instead }. It was made { $hop }.
mb-proxy-tcp = A TCP proxy stands there: the legs are two TCP connections carrying the same bytes.
mb-proxy-l7 = An HTTP/WebSocket proxy stands there: the legs are two TCP connections carrying the same messages.
mb-at-timer = It came by itself after { $silence } s of silence: the middlebox acted when its idle timer fired.
mb-next-packet = It answered the first packet after { $silence } s of silence: the middlebox had already forgotten the flow and rejected the next packet.
mb-rec = Keep connections through this middlebox busier than its idle timeout (a heartbeat at well under half of it), or raise the idle timeout of its layer-4 listener.

## middlebox_reset (one vantage)

single-summary = { $conn }: a RST after { $silence } s of silence does not fit the { $side }'s other packets: likely built by a middlebox
single-explain = Only { $vantage } saw this connection, so the RST's origin rests on its fingerprint and timing: it answered the first packet after { $silence } s of silence, and its TTL/IP ID do not match what the { $side } sends. A capture nearer the { $side } would show whether it ever left there.
single-summary-many = { $n } connections: a RST after { $silence } s of silence that does not fit the { $side }'s other packets: likely built by a middlebox
single-explain-many = Only { $vantage } saw these connections, so the RSTs' origin rests on their fingerprint and timing: each answered the first packet after { $silence } s of silence, and their TTL/IP ID do not match what the { $side } sends. A capture nearer the { $side } would show whether they ever left there.
single-rec = Capture at the other end at the same time to confirm; meanwhile keep the connection busier than the suspected idle timeout.

## silent_drop

sd-end-gave-up = then the { $side } gave up and sent its own { $kind }
sd-end-arrived = then a { $kind } arrived
sd-end-capture = and the capture ends
sd-summary = { $conn }: after { $silence } s of silence the { $side }'s packets vanish { $hop }: { $n } retransmissions, no answer
sd-explain = At { $vantage } the { $side } sent after { $silence } s of silence and retransmitted { $n } times without any answer, { $end }.
sd-summary-many = { $n } connections: after { $silence } s of silence the { $side }'s packets vanish { $hop }: { $retrans } retransmissions in all, no answer
sd-explain-many = At { $vantage } the { $side } sent after { $silence } s of silence and retransmitted ({ $retrans } times on the { $n } connections) without any answer, { $end }.
sd-confirmed = The capture downstream shows that none of it arrived: a middlebox dropped the packets of a flow it had forgotten, without a RST.
sd-unconfirmed = No capture downstream confirms where the packets were lost; the lack of any answer, even a RST, points to a middlebox that forgot the flow and drops its packets.
sd-rec = A middlebox that drops silently makes the client wait for its own heartbeat check: keep connections busier than its idle timeout, and make the client's dead-connection check short.

## idle_timeout

it-timer-summary = A middlebox { $hop } ends connections after { $estimate } ± { $pm } s of silence ({ $n } { $n ->
        [one] connection
       *[other] connections
    })
it-next-summary = A middlebox { $hop } forgets connections idle for between { $lower } and { $upper } s ({ $n } { $n ->
        [one] connection
       *[other] connections
    })
it-timer-one = The middlebox acted on its own timer: its FIN/RST came after { $min } s of silence, so the timeout is about { $estimate } s.
it-timer-many = The middlebox acted on its own timer: its FIN/RST came after silences of { $min } to { $max } s, so the timeout is about { $estimate } s.
it-next = The middlebox acts only when the next packet arrives, so the timeout is bounded, not measured: a silence of { $upper } s proved fatal{ $shortest }, { $rest }
it-shortest = {" "}(the shortest fatal one)
it-survived = and one of { $l } s was survived. The timeout lies in between.
it-no-lower = and no shorter silence was seen to survive, so the lower bound is unknown.
it-rec = Send a heartbeat at most every { $secs } s ({ $how }), or raise the middlebox's layer-4 idle timeout above the longest silence the application allows.
it-how-half = about half the timeout
it-how-survived = below the longest silence that survived

## heartbeat_too_slow

hb-timeout-sharp = { $t } s
hb-timeout-between = between { $lower } and { $upper } s
hb-summary = { $conn }: the { $kind } heartbeat (median { $median } s) went { $slowest } s without a beat; the middlebox's idle timeout is { $timeout }
hb-explain = Heartbeat median { $median } s, p95 { $p95 } s, longest interval between beats { $max } s; the silence that ended the connection lasted { $silence } s. The idle timeout is { $timeout }.
hb-stretch = It stretched to a median of { $median } s for { $count } beats from { $from }.
hb-summary-many = { $n } connections: the { $kind } heartbeat (median { $median } s) went up to { $slowest } s without a beat; the middlebox's idle timeout is { $timeout }
hb-explain-many = Heartbeat medians { $median } s; the silences that ended the connections lasted { $silence } s, the longest interval between beats { $slowest } s. The idle timeout is { $timeout }.
hb-stretch-many = On { $stretched } of them it stretched to a median of { $median } s for a run of beats (a throttled background tab).
hb-rec = Beat at most every { $secs } s (about half the timeout) from a timer that background throttling does not stretch (a Web Worker or the server side), or raise the balancer's layer-4 idle timeout above the slowest heartbeat.

## call_cut

cc-reason = , Reason: { $r }
cc-summary = { $n } { $n ->
        [one] call was
       *[other] calls were
    } up when { $conn } died: { $calls }
cc-explain = The call's signalling connection died with the call up and no BYE on it.
cc-gateway = The gateway leg got its BYE { $delays } after the connection died.
cc-rec = Fix the connection's death first; then let the softswitch keep a call alive across a quick reconnect (RFC 5626 flow recovery) instead of cutting it.

## half_open

ho-until-own = until its own { $kind } at frame { $frame }
ho-until-capture-end = until the capture ends, with no FIN or RST
ho-summary = { $conn }: the server kept the connection { $lag } s after the client's side had ended ({ $how })
ho-explain = After the last good packet the client believed in the connection for { $client } s, the server for { $server } s. Meanwhile the server keeps the agent's registration and may send calls into a dead connection.
ho-rec = Let the server detect dead clients quickly (WebSocket ping or SIP keep-alive from the server side, or TCP keep-alive shorter than the middlebox timeout), and let a new REGISTER replace the old flow (RFC 5626 outbound).

## l7_proxy

l7-client-side = client-side
l7-proxied = proxied
l7-summary = A layer-7 (HTTP/WebSocket) proxy stands in the path: { $n } { $n ->
        [one] connection
       *[other] connections
    } run as two TCP connections
l7-explain = The same messages travel on two TCP connections at different stream offsets: the proxy rewrote the HTTP upgrade and relays the WebSocket frames. Its read timeout, not a TCP timer, decides how long a quiet connection lives.
l7-rec = Check the proxy's read/idle timeout for the WebSocket route (nginx proxy_read_timeout, default 60 s) and keep the heartbeat well below it.

## weak_network

wn-hop-lost = { $n } lost between { $from } and { $to } ({ $direction })
wn-hops = ; { $list }
wn-summary = The network loses packets: { $retrans } retransmissions on { $n } { $n ->
        [one] connection
       *[other] connections
    } no middlebox ended{ $hops }
wn-explain = Retransmissions are about { $rate } % of the segments kept in the sample, and the connections survive them: this is loss (or delay) on the path, not a middlebox ending connections.
wn-rec = Look at the link where the losses are placed (Wi-Fi, VPN, an overloaded uplink); a middlebox timeout change will not help here.

## agent_outage

ao-noticed = , noticed after { $secs } s
ao-summary = Agent { $agent } had no working signalling connection for { $outage } s ({ $n } reconnect { $n ->
        [one] attempt
       *[other] attempts
    }{ $noticed })
ao-none-before-end = {" "}(none before the capture ends)
ao-summary-many = Agent { $agent } lost its signalling connection { $n } times: { $outage } s without a working connection in all, the longest { $longest } s
ao-explain = From the last good packet on { $conn } to the first answer on the next connection{ $none }. Reconnect attempts: { $attempts }, failed: { $failed }.
ao-rec = Detect a dead connection quickly (a heartbeat check of a few seconds, not 45 s), tell the agent at once, and reconnect with exponential back-off.

## Verdict

v-what-drops = silently drops
v-what-closes = closes
v-what-resets = resets
v-summary-timer = A middlebox { $hop } { $what } connections after { $estimate } ± { $pm } s of silence ({ $deaths } of { $disconnects } disconnects). Keep the heartbeat under { $keep } s or raise the middlebox's layer-4 idle timeout.
v-summary-idle = A middlebox { $hop } { $what } connections idle for between { $lower } and { $upper } s ({ $deaths } of { $disconnects } disconnects). Keep the heartbeat under { $keep } s or raise the middlebox's layer-4 idle timeout.
v-change-single-end = A capture at the other end showing the same RST or FIN leaving the endpoint would clear the middlebox.
v-change-inside = A capture inside the middlebox showing the endpoint's packet arriving there would move the blame to that endpoint.
v-weak-lost = , { $l } segments lost on a hop
v-weak = No middlebox ended a connection; the network loses packets ({ $retrans } retransmissions{ $lost }).
v-weak-change = A RST or FIN that its supposed sender never sent, or retransmissions after a silence that never arrive, would point to a middlebox instead.
v-single = Nothing in this one capture proves a middlebox end or loss ({ $n } { $n ->
        [one] connection
       *[other] connections
    }; { $far } ended by the far side, which only a capture there can attribute).
v-single-change = A capture at the other end at the same time would show whether the far side's FIN or RST really left it.
v-healthy = No connection was ended by a middlebox and no loss was seen in these captures ({ $n } { $n ->
        [one] connection
       *[other] connections
    }).
v-healthy-change = Captures that cover a disconnect (the agent's and the softswitch's at the same time) would show its cause.
