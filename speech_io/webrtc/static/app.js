// duplex-agent talk page: one WebRTC call to the server, events over a data channel, and
// in-browser measurement of what actually comes out (energy per 10 ms of mic and agent audio,
// both on the AudioContext clock). Everything measured is kept in window.duplex for tests.
"use strict";

const params = new URLSearchParams(location.search);
const BIN_S = 0.01;            // energy bins
const KEEP_S = 120;            // history kept for measurements
const SPEECH_RMS = 0.01;       // about -40 dBFS: "there is sound"

const METER_WORKLET = `
class Meter extends AudioWorkletProcessor {
  constructor(options) {
    super(); this.acc = 0; this.n = 0; this.size = Math.round(sampleRate * ${BIN_S}); this.t = -1;
    this.record = !!(options && options.processorOptions && options.processorOptions.record);
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    if (this.record) this.port.postMessage({ t: currentTime, samples: ch.slice(0) });
    for (let i = 0; i < ch.length; i++) {
      if (this.n === 0) this.t = currentTime + i / sampleRate;
      this.acc += ch[i] * ch[i];
      if (++this.n >= this.size) {
        this.port.postMessage([this.t, Math.sqrt(this.acc / this.n)]);
        this.acc = 0; this.n = 0;
      }
    }
    return true;
  }
}
registerProcessor("meter", Meter);`;

const duplex = {
  state: "idle",          // idle | connecting | connected | closed | failed
  sessionId: null,
  events: [],             // [receivedAtMs, event]
  mic: [],                // [audioContextTime, rms] per 10 ms of the microphone
  remote: [],             // [audioContextTime, rms] per 10 ms of the agent's audio as played
  rttMs: [],              // data-channel ping round trips
  remoteAudio: [],        // with ?record=1: the agent's audio as played (AudioContext rate)
  remoteAudioStart: null,
  sampleRate: null,
  turns: [],              // the agent's turn records (response / bargein / backchannel / cancelled)
  agentText: "",          // the reply being spoken, as the LLM streams it
  audioRoundTripMs: null,
  replyGapMs: null,
  error: null,
  start, stop, sendText, setEmotion, interrupt,
};
window.duplex = duplex;

let pc = null, channel = null, ctx = null, micStream = null, pingTimer = null, measureTimer = null;
const $ = (id) => document.getElementById(id);

function setStatus(state, text) {
  duplex.state = state;
  $("status").textContent = text || state;
  $("mic").textContent = (state === "connecting" || state === "connected") ? "Hang up" : "Start talking";
  $("mic").classList.toggle("live", state === "connected");
}

function line(cls, text) {
  const div = document.createElement("div");
  div.className = cls;
  div.textContent = text;
  $("transcript").appendChild(div);
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

async function meter(source, store, bar, record = false) {
  const node = new AudioWorkletNode(ctx, "meter", { processorOptions: { record } });
  node.port.onmessage = (e) => {
    if (!Array.isArray(e.data)) {  // raw samples (?record=1): kept for tests that transcribe what played
      duplex.remoteAudio.push(...e.data.samples);
      if (duplex.remoteAudioStart === null) duplex.remoteAudioStart = e.data.t;
      return;
    }
    store.push(e.data);
    if (store.length > KEEP_S / BIN_S) store.splice(0, store.length - KEEP_S / BIN_S);
    bar.style.width = Math.min(100, 100 * Math.sqrt(e.data[1] / 0.3)) + "%";
  };
  // Connected to a muted gain so the graph pulls it; the <audio> element does the playing.
  const mute = ctx.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(ctx.destination);
}

function onEvent(ev) {
  duplex.events.push([performance.now(), ev]);
  switch (ev.type) {
    case "session": duplex.sessionId = ev.id; break;
    case "state": $("state").textContent = ev.state; break;
    case "text":
      if (ev.role === "agent" && !ev.final) {  // streamed pieces of the reply: one live line
        duplex.agentText += ev.text;
        liveLine().textContent = "agent: " + duplex.agentText;
      } else {
        if (ev.role === "agent") { liveLine().remove(); duplex.agentText = ""; }
        line(ev.role, (ev.role === "agent" ? "agent: " : "you: ") + ev.text);
      }
      break;
    case "turn": onTurn(ev); break;
    case "emotion": {
      const sel = $("emotion");
      if (ev.available) sel.innerHTML = ev.available.map((e) => `<option>${e}</option>`).join("");
      sel.value = ev.name;
      break;
    }
    case "runtime": runtime = ev; showCounts(); break;
    case "latency": $("agent-latency").textContent = `${ev.name} ${ev.ms.toFixed(0)} ms`; break;
    case "pong": {
      const ms = performance.now() - ev.t;
      duplex.rttMs.push(ms);
      $("rtt").textContent = ms.toFixed(1) + " ms";
      break;
    }
    case "error": line("error", "error: " + ev.message); break;
  }
}

let runtime = null, liveDiv = null;

function liveLine() {
  if (!liveDiv || !liveDiv.isConnected) { liveDiv = document.createElement("div"); liveDiv.className = "agent"; $("transcript").appendChild(liveDiv); }
  return liveDiv;
}

function onTurn(ev) {
  duplex.turns.push(ev);
  const ms = (x) => (x === null || x === undefined) ? "-" : x.toFixed(0) + " ms";
  if (ev.kind === "response") {
    $("turn-response").textContent = ms(ev.ms) + (ev.trigger ? ` (${ev.trigger})` : "");
    const p = ev.parts || {};
    $("turn-parts").textContent = ["endpoint", "listen", "llm", "generator", "decoder", "playout"].map((k) => (p[k] || 0).toFixed(0)).join(" / ");
  } else if (ev.kind === "bargein") $("turn-bargein").textContent = ms(ev.ms);
  else if (ev.kind === "backchannel") $("turn-backchannel").textContent = ms(ev.ms);
  showCounts();
}

function showCounts() {
  const n = (k) => duplex.turns.filter((t) => t.kind === k).length;
  const stalls = runtime ? runtime.loop_stalls_over_20ms : "-";
  $("turn-counts").textContent = `${n("response")} / ${n("bargein")} / ${stalls}`;
}

function setEmotion(name) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify({ type: "emotion", name }));
}

function interrupt() {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify({ type: "interrupt" }));
}

function sendText(text) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify({ type: "text", text }));
}

// Lag (ms) that best aligns the agent's energy envelope with the mic's over the last `span`
// seconds: for the echo agent this is the whole audio round trip, its delay included.
function envelopeLag(spanS = 6, maxLagS = 2) {
  const a = duplex.mic, b = duplex.remote;
  if (a.length < spanS / BIN_S || b.length < spanS / BIN_S) return null;
  const tEnd = Math.min(a[a.length - 1][0], b[b.length - 1][0]);
  const bin = (arr, t0, n) => {
    const out = new Float64Array(n);
    for (const [t, r] of arr) { const i = Math.floor((t - t0) / BIN_S); if (i >= 0 && i < n) out[i] = Math.log10(r + 1e-4); }
    return out;
  };
  const n = Math.floor(spanS / BIN_S), lags = Math.floor(maxLagS / BIN_S);
  const x = bin(a, tEnd - spanS - maxLagS, n + lags), y = bin(b, tEnd - spanS, n);
  let best = -2, bestLag = 0;
  for (let L = 0; L <= lags; L++) {
    let sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    for (let i = 0; i < n; i++) { const u = x[i + lags - L], v = y[i]; sx += u; sy += v; sxx += u * u; syy += v * v; sxy += u * v; }
    const cov = sxy / n - (sx / n) * (sy / n), vx = sxx / n - (sx / n) ** 2, vy = syy / n - (sy / n) ** 2;
    const r = cov / Math.sqrt(vx * vy + 1e-12);
    if (r > best) { best = r; bestLag = L; }
  }
  return best > 0.5 ? { ms: bestLag * BIN_S * 1000, r: best } : null;
}

// End of the user's last sound to the next onset of agent audio.
function replyGap() {
  const loud = (arr) => arr.filter(([, r]) => r > SPEECH_RMS).map(([t]) => t);
  const m = loud(duplex.mic), r = loud(duplex.remote);
  if (!m.length || !r.length) return null;
  let lastEnd = null;
  for (let i = 1; i < m.length; i++) if (m[i] - m[i - 1] > 0.3) lastEnd = m[i - 1];
  if (lastEnd === null) return null;
  const onset = r.find((t) => t > lastEnd);
  return onset === undefined ? null : (onset - lastEnd) * 1000;
}

function measure() {
  const lag = envelopeLag();
  if (lag) { duplex.audioRoundTripMs = lag.ms; $("audio-rtt").textContent = `${lag.ms.toFixed(0)} ms (r=${lag.r.toFixed(2)})`; }
  const gap = replyGap();
  if (gap !== null) { duplex.replyGapMs = gap; $("reply-gap").textContent = gap.toFixed(0) + " ms"; }
}

async function start() {
  if (pc) return;
  setStatus("connecting", "asking for the microphone");
  try {
    const raw = params.get("raw") === "1";
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: !raw, noiseSuppression: !raw, autoGainControl: !raw },
    });
    ctx = new AudioContext();
    duplex.sampleRate = ctx.sampleRate;
    await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([METER_WORKLET], { type: "text/javascript" })));
    await meter(ctx.createMediaStreamSource(micStream), duplex.mic, $("level-mic"));

    const config = await (await fetch("/config")).json();
    pc = new RTCPeerConnection({ iceServers: config.iceServers });
    channel = pc.createDataChannel("events");
    channel.onmessage = (e) => onEvent(JSON.parse(e.data));
    channel.onopen = () => {
      pingTimer = setInterval(() => channel.send(JSON.stringify({ type: "ping", t: performance.now() })), 1000);
    };
    pc.ontrack = async (e) => {
      const stream = e.streams[0] || new MediaStream([e.track]);
      // Chrome only feeds remote WebRTC audio into WebAudio while a media element plays it.
      $("agent-audio").srcObject = stream;
      await meter(ctx.createMediaStreamSource(stream), duplex.remote, $("level-agent"), params.get("record") === "1");
    };
    pc.onconnectionstatechange = () => {
      const s = pc && pc.connectionState;
      if (s === "connected") setStatus("connected", "connected");
      if (s === "failed" || s === "closed") stop(s);
    };
    micStream.getAudioTracks().forEach((t) => pc.addTrack(t, micStream));
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
    });
    setStatus("connecting", "connecting to the agent");
    const res = await fetch("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type: pc.localDescription.type, sdp: pc.localDescription.sdp }),
    });
    const answer = await res.json();
    if (!res.ok) throw new Error(answer.error || res.statusText);
    duplex.sessionId = answer.session_id;
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    measureTimer = setInterval(measure, 1000);
  } catch (err) {
    duplex.error = String(err && err.message || err);
    line("error", "error: " + duplex.error);
    stop("failed");
  }
}

function stop(reason) {
  clearInterval(pingTimer); clearInterval(measureTimer);
  if (pc) { pc.close(); pc = null; }
  if (micStream) { micStream.getTracks().forEach((t) => t.stop()); micStream = null; }
  if (ctx) { ctx.close(); ctx = null; }
  channel = null;
  $("state").textContent = "idle";
  setStatus(reason === "failed" ? "failed" : "closed", reason === "failed" ? "failed: " + (duplex.error || "") : "hung up");
}

$("mic").onclick = () => (pc ? stop("closed") : start());
$("emotion").onchange = (e) => setEmotion(e.target.value);
$("interrupt").onclick = () => interrupt();
$("say").onsubmit = (e) => { e.preventDefault(); sendText($("text").value); line("user", "you: " + $("text").value); $("text").value = ""; };
if (params.get("autostart") === "1") start();
