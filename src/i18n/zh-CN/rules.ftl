# 诊断结论的简体中文措辞：结论、各项发现（摘要、说明、建议）及其引用的证据。
# 数字由调用方按规则的精度格式化（保留小数点）；单位写在消息里（"8.0 秒"）。

## 通用词语

empty = {""}
raw = { $v }
secs = { $s } 秒
list-sep = {"、"}
clause-sep = {"；"}
sentence-sep = {""}
side-client = 客户端
side-server = 服务端
ipid-none = 无
ipid-zero = 恒为 0
ipid-incrementing = 递增
ipid-random = 随机
dir-client-to-server = 客户端到服务端方向
dir-server-to-client = 服务端到客户端方向
hop-between = { $a } 与 { $b } 之间
hop-between-side = { $vantage } 与{ $side }之间
hop-beyond = { $vantage } 之后、朝{ $side }方向的路径上
evidence-left-out = （另有 { $left } 条证据未列出：见 --max-evidence。）
range = { $min } 至 { $max }
group-evidence-first = 证据只列出这 { $n } 条连接中时间最早的 { $shown } 条（用 --max-evidence 可列出更多；JSON 中列有全部连接）。

## 证据

ev-end-from-side = 来自{ $side }方向（{ $addr }:{ $port }）的 { $kind }，TTL { $ttl }，IP ID { $ipid }，窗口 { $window }{ $misfit }
ev-sender-usual = ；而该发送方其他报文的 TTL 为 { $ttl }，IP ID { $pattern }
ev-never-sent = 此处{ $side }从未发出该报文：这里最先出现的结束报文是从{ $by }方向发给它的 { $kind }
ev-last-here-no-end = 该连接在此处的最后一个报文；没有来自{ $side }的 { $kind }
ev-first-after-silence-answered = 静默 { $secs } 秒后的第一个报文，由{ $side }发出；该 { $kind } 就是对它的响应
ev-first-after-silence = 静默 { $secs } 秒后的第一个报文，由{ $side }发出
ev-rst-misfit = 看似来自{ $side }的 RST：TTL { $ttl }（其他报文为 { $ttl_usual }），IP ID { $ipid }（其他报文：{ $pattern }），窗口 { $window }，TCP 选项 { $options } 个
ev-retrans-no-answer = 重传，距静默结束 { $secs } 秒，无应答
ev-last-nothing-arrived = 此处的最后一个报文；{ $side }在静默之后发出的报文均未到达
ev-client-end = 客户端一侧连接的结束
ev-server-holds = 服务端仍保持着该连接，{ $how }
ev-l7-conn = { $which } TCP 连接 { $src }:{ $sport } > { $dst }:{ $dport }
ev-retransmission = 重传
ev-signalling-ends = 信令连接结束
ev-first-answer = 服务端在新连接上的第一个应答
ev-heartbeat = 由{ $side }发起的 { $kind } 心跳：共 { $count } 次，间隔中位数 { $median } 秒，p95 { $p95 } 秒，最大 { $max } 秒
ev-invite = 呼叫 { $call } 的 INVITE（已接通，连接断开前没有 BYE）
ev-gateway-bye = 语音网关侧的 BYE（呼叫 { $call }）{ $reason }

## middlebox_reset、middlebox_close（多抓包点）

mb-word-closed = 关闭
mb-word-reset = 重置
mb-summary = { $conn }：{ $hop }的中间设备在连接静默 { $silence } 秒后将其{ $word }；{ $side }从未发出过这个 { $kind }
mb-summary-many = { $n } 条连接：{ $hop }的中间设备在连接静默 { $silence } 秒后将其{ $word }；{ $side }从未发出过这些 { $kind }
mb-instead-received = 在 { $vantage } 处，{ $side }反而收到了中间设备发来的 { $kind }
mb-instead-quiet = 在 { $vantage } 处看不到来自{ $side }的 { $kind }：连接在那里只是没了动静
mb-explain = { $vantage } 处的 { $kind } 看起来来自{ $side }，但{ $instead }。它是在 { $hop }产生的。
mb-proxy-tcp = 那里有一个 TCP 代理：两段是承载相同字节流的两条 TCP 连接。
mb-proxy-l7 = 那里有一个 HTTP/WebSocket 代理：两段是承载相同消息的两条 TCP 连接。
mb-at-timer = 它在静默 { $silence } 秒后自行出现：中间设备在空闲超时计时器到期时主动动作。
mb-next-packet = 它是对静默 { $silence } 秒后第一个报文的响应：中间设备早已删除该会话表项，于是拒绝了下一个报文。
mb-rec = 让经过该中间设备的连接保持比其空闲超时更频繁的流量（心跳间隔远小于超时的一半），或调大其四层监听的空闲超时。

## middlebox_reset（单一抓包点）

single-summary = { $conn }：静默 { $silence } 秒后出现的 RST 与{ $side }其他报文的特征不符，很可能是中间设备构造的
single-explain = 只有 { $vantage } 抓到了这条连接，因此 RST 的来源只能依据其指纹和时序判断：它响应的是静默 { $silence } 秒后的第一个报文，且其 TTL/IP ID 与{ $side }发出的报文不符。在更靠近{ $side }的位置抓包，即可确认它是否真的从那里发出。
single-summary-many = { $n } 条连接：静默 { $silence } 秒后出现的 RST 与{ $side }其他报文的特征不符，很可能是中间设备构造的
single-explain-many = 只有 { $vantage } 抓到了这些连接，因此这些 RST 的来源只能依据其指纹和时序判断：每个 RST 响应的都是静默 { $silence } 秒后的第一个报文，且其 TTL/IP ID 与{ $side }发出的报文不符。在更靠近{ $side }的位置抓包，即可确认它们是否真的从那里发出。
single-rec = 请在另一端同时抓包加以确认；在此之前，让连接的流量间隔小于疑似的空闲超时。

## silent_drop

sd-end-gave-up = 随后{ $side }放弃，自己发出了 { $kind }
sd-end-arrived = 随后收到了一个 { $kind }
sd-end-capture = 直到抓包结束
sd-summary = { $conn }：静默 { $silence } 秒后，{ $side }的报文在 { $hop }消失：重传 { $n } 次，无应答
sd-explain = 在 { $vantage } 处，{ $side }在静默 { $silence } 秒后发送报文，重传 { $n } 次仍无任何应答，{ $end }。
sd-summary-many = { $n } 条连接：静默 { $silence } 秒后，{ $side }的报文在 { $hop }消失：共重传 { $retrans } 次，无应答
sd-explain-many = 在 { $vantage } 处，{ $side }在静默 { $silence } 秒后发送报文，并不断重传（这 { $n } 条连接共重传 { $retrans } 次）仍无任何应答，{ $end }。
sd-confirmed = 下游抓包显示这些报文一个也没有到达：中间设备已删除该会话表项，直接丢弃了其报文，也没有回 RST。
sd-unconfirmed = 没有下游抓包可以确认报文在哪里丢失；但连 RST 都没有收到，说明很可能是某个中间设备删除了该会话表项并丢弃其报文。
sd-rec = 静默丢包的中间设备会让客户端一直等到自己的心跳检测超时才发现断连：请让连接的流量间隔小于其空闲超时，并缩短客户端的死连接检测时间。

## idle_timeout

it-timer-summary = { $hop }的中间设备会在连接静默 { $estimate } ± { $pm } 秒后将其结束（{ $n } 条连接）
it-next-summary = { $hop }的中间设备会清除空闲 { $lower } 到 { $upper } 秒的连接（{ $n } 条连接）
it-timer-one = 中间设备按自己的计时器动作：它的 FIN/RST 出现在静默 { $min } 秒之后，因此超时约为 { $estimate } 秒。
it-timer-many = 中间设备按自己的计时器动作：它的 FIN/RST 出现在 { $min } 到 { $max } 秒的静默之后，因此超时约为 { $estimate } 秒。
it-next = 该中间设备只在下一个报文到达时才动作，因此超时只能给出区间，无法直接测出：{ $upper } 秒的静默导致了断连{ $shortest }，{ $rest }
it-shortest = （导致断连的静默中最短的一次）
it-survived = 而连接挺过了 { $l } 秒的静默。超时介于两者之间。
it-no-lower = 且没有观察到更短的静默后连接存活，因此下限未知。
it-rec = 心跳间隔不超过 { $secs } 秒（{ $how }），或把中间设备的四层空闲超时调大到超过应用允许的最长静默时间。
it-how-half = 约为超时的一半
it-how-survived = 低于连接曾存活过的最长静默

## heartbeat_too_slow

hb-timeout-sharp = { $t } 秒
hb-timeout-between = { $lower } 到 { $upper } 秒之间
hb-summary = { $conn }：{ $kind } 心跳（间隔中位数 { $median } 秒）曾有 { $slowest } 秒没有发出；而中间设备的空闲超时为 { $timeout }
hb-explain = 心跳间隔中位数 { $median } 秒，p95 { $p95 } 秒，两次心跳之间的最长间隔 { $max } 秒；导致连接结束的那次静默持续了 { $silence } 秒。空闲超时为 { $timeout }。
hb-stretch = 从 { $from } 起，连续 { $count } 次心跳的间隔中位数被拉长到 { $median } 秒。
hb-summary-many = { $n } 条连接：{ $kind } 心跳（间隔中位数 { $median } 秒）最长曾有 { $slowest } 秒没有发出；而中间设备的空闲超时为 { $timeout }
hb-explain-many = 心跳间隔中位数为 { $median } 秒；导致各连接结束的静默持续了 { $silence } 秒，两次心跳之间的最长间隔为 { $slowest } 秒。空闲超时为 { $timeout }。
hb-stretch-many = 其中 { $stretched } 条连接的心跳曾被拉长，一段时间内的间隔中位数达到 { $median } 秒（浏览器后台标签页被节流）。
hb-rec = 心跳间隔不超过 { $secs } 秒（约为超时的一半），并使用不会被浏览器后台节流拉长的计时器（Web Worker 或由服务端发送），或把负载均衡（SLB）的四层空闲超时调大到超过最慢的心跳间隔。

## call_cut

cc-reason = ，Reason：{ $r }
cc-summary = { $conn } 断开时有 { $n } 通呼叫正在通话：{ $calls }
cc-explain = 呼叫仍在通话中，其信令连接就断开了，连接上没有 BYE。
cc-gateway = 语音网关侧在连接断开 { $delays }后收到 BYE。
cc-rec = 先解决连接断开的问题；然后让软交换在座席快速重连期间保持呼叫（RFC 5626 流恢复），而不是直接挂断。

## half_open

ho-until-own = 直到它自己在第 { $frame } 帧发出 { $kind }
ho-until-capture-end = 直到抓包结束都没有 FIN 或 RST
ho-summary = { $conn }：客户端一侧已经结束后，服务端仍将该连接保持了 { $lag } 秒（{ $how }）
ho-explain = 最后一个正常报文之后，客户端认为连接仍有效的时间为 { $client } 秒，服务端为 { $server } 秒。在此期间，服务端仍保留着座席的注册，可能把呼叫送进一条已经断开的连接。
ho-rec = 让服务端尽快发现失效的客户端（由服务端发送 WebSocket ping 或 SIP 保活，或使用短于中间设备超时的 TCP keep-alive），并让新的 REGISTER 替换旧的 flow（RFC 5626 outbound）。

## l7_proxy

l7-client-side = 客户端侧
l7-proxied = 代理侧
l7-summary = 路径上有一个七层（HTTP/WebSocket）代理：{ $n } 条连接各自以两条 TCP 连接的形式传输
l7-explain = 相同的消息以不同的流偏移出现在两条 TCP 连接上：代理改写了 HTTP 升级请求并转发 WebSocket 帧。决定空闲连接能存活多久的是代理的读超时，而不是 TCP 计时器。
l7-rec = 检查代理上 WebSocket 路由的读/空闲超时（nginx proxy_read_timeout，默认 60 秒），并让心跳间隔远小于该值。

## weak_network

wn-hop-lost = { $from } 与 { $to } 之间丢失 { $n } 个报文段（{ $direction }）
wn-hops = ；{ $list }
wn-summary = 网络存在丢包：{ $n } 条未被中间设备结束的连接上共有 { $retrans } 次重传{ $hops }
wn-explain = 重传约占样本中报文段的 { $rate } %，而连接都挺了过来：这是路径上的丢包（或时延），不是中间设备结束了连接。
wn-rec = 排查丢包所在的链路（Wi-Fi、VPN、过载的上行链路）；调整中间设备的超时在这里无济于事。

## agent_outage

ao-noticed = ，{ $secs } 秒后才被发现
ao-summary = 座席 { $agent } 有 { $outage } 秒没有可用的信令连接（重连尝试 { $n } 次{ $noticed }）
ao-none-before-end = （抓包结束前一直没有）
ao-summary-many = 座席 { $agent } 的信令连接断开了 { $n } 次：累计 { $outage } 秒没有可用连接，最长一次 { $longest } 秒
ao-explain = 从 { $conn } 上最后一个正常报文，到下一条连接上的第一个应答{ $none }。重连尝试 { $attempts } 次，失败 { $failed } 次。
ao-rec = 尽快发现失效连接（心跳检测设为几秒，而不是 45 秒），立即提示座席，并以指数退避方式重连。

## 结论

v-what-drops = 静默丢弃
v-what-closes = 关闭
v-what-resets = 重置
v-summary-timer = { $hop }的中间设备会在静默 { $estimate } ± { $pm } 秒后{ $what }连接（{ $disconnects } 次断连中有 { $deaths } 次由此导致）。请把心跳间隔控制在 { $keep } 秒以内，或调大该中间设备的四层空闲超时。
v-summary-idle = { $hop }的中间设备会{ $what }空闲 { $lower } 到 { $upper } 秒的连接（{ $disconnects } 次断连中有 { $deaths } 次由此导致）。请把心跳间隔控制在 { $keep } 秒以内，或调大该中间设备的四层空闲超时。
v-change-single-end = 如果在另一端抓包，看到同一个 RST 或 FIN 确实是从端点发出的，就可以排除中间设备。
v-change-inside = 如果在中间设备内部抓包，看到端点的报文确实到达了那里，责任就会转到该端点。
v-weak-lost = ，其中 { $l } 个报文段在某一跳上丢失
v-weak = 没有中间设备结束连接；网络存在丢包（{ $retrans } 次重传{ $lost }）。
v-weak-change = 如果发现某个 RST 或 FIN 并非由其表面上的发送方发出，或静默之后的重传始终没有到达，问题就会转而指向中间设备。
v-single = 仅凭这一份抓包，无法证明有中间设备结束连接或存在丢包（共 { $n } 条连接；其中 { $far } 条由远端结束，只有在远端抓包才能确认其来源）。
v-single-change = 在另一端同时抓包，就能看出远端的 FIN 或 RST 是否真的由它发出。
v-healthy = 这些抓包中没有连接被中间设备结束，也没有发现丢包（共 { $n } 条连接）。
v-healthy-change = 覆盖一次断连的抓包（座席和软交换同时抓取）即可显示其原因。
