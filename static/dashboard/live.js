// Hoof Hearted live page: connection state, polling fallback, pace, theme, host picker.
// htmx and its ws extension do the swapping; this only says what the connection is doing.
(function () {
  "use strict";
  var MAX_RETRIES = 6;          // after this many failed reconnects: offline, with a button
  var POLL_AFTER_FAILURES = 2;  // WebSockets that never opened this often: poll over HTTP
  var UNKNOWN_HOST = 4404;      // the server's close code for a host nobody reports under

  // Reconnect back-off: 1 s, 2 s, 4 s … capped at 30 s, with jitter; none once offline.
  htmx.config.wsReconnectDelay = function (retry) {
    var base = Math.min(30000, 1000 * Math.pow(2, retry));
    var delay = state.retries >= MAX_RETRIES ? 30000 : base / 2 + Math.random() * base / 2;
    state.nextRetryAt = Date.now() + delay;
    return delay;
  };

  var state = { opened: false, failures: 0, retries: 0, polling: null, nextRetryAt: 0, pace: "live", ticker: null, ager: null };

  function $(id) { return document.getElementById(id); }

  function show(kind, text) {
    var conn = $("conn");
    if (!conn) return;
    conn.dataset.state = kind;
    conn.querySelector(".conn-text").textContent = text;
    $("reconnect").hidden = kind !== "offline";
    ageWhileCutOff(CUT_OFF.indexOf(kind) >= 0);
  }

  // Cut off from the server, the hosts overview must not keep saying "live · 0 s ago": the
  // CSS dims it and says "not updating", and each host's age counts on here from the age the
  // last frame gave it (data-age-s) and when that frame came (not the sample's clock time:
  // this browser's clock may differ from the server's).
  var CUT_OFF = ["reconnecting", "offline", "unknown"];

  // Words as the server's (dashboard.present.human_duration): "40 s", "5 min", "2 h 14 min".
  function humanDuration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return h ? d + " d " + h + " h" : d + " d";
    if (h) return m ? h + " h " + m + " min" : h + " h";
    if (m) return m + " min";
    return s + " s";
  }

  function stampHosts() {
    var now = Date.now();
    document.querySelectorAll(".host-card[data-age-s]").forEach(function (card) {
      if (!card.dataset.seenAt) card.dataset.seenAt = String(now);
    });
  }

  function ageHosts() {
    stampHosts();
    var now = Date.now();
    document.querySelectorAll(".host-card[data-age-s]").forEach(function (card) {
      var age = card.querySelector(".host-age");
      var seconds = Number(card.dataset.ageS) + (now - Number(card.dataset.seenAt)) / 1000;
      if (age) age.textContent = humanDuration(seconds) + " ago";
    });
  }

  function ageWhileCutOff(cutOff) {
    if (cutOff && !state.ager) { ageHosts(); state.ager = setInterval(ageHosts, 1000); }
    if (!cutOff && state.ager) { clearInterval(state.ager); state.ager = null; }
  }

  function paceMs() {
    var interval = Number($("live").dataset.intervalMs) || 1000;
    return { live: interval, "2s": 2000, "5s": 5000 }[state.pace] || null;
  }

  // GPUs whose "PCIe and link" detail is open: the server reads their PCIe while it is.
  function openDetails() {
    var open = [];
    document.querySelectorAll("details.pcie-detail[open][data-gpu]").forEach(function (d) {
      open.push(d.dataset.gpu);
    });
    return open;
  }

  function sendDetail(gpu, open) {
    var ws = socket();
    if (ws && ws.socket && ws.socket.readyState === 1) {
      ws.socket.send(JSON.stringify({ pcie: gpu, open: open }));
    }
  }

  // A whole new live area (a GPU appeared, a reconnect) comes with its details closed:
  // open again those that were (their "toggle" tells the server again).
  function reopen(open) {
    open.forEach(function (g) {
      var d = document.querySelector('details.pcie-detail[data-gpu="' + CSS.escape(g) + '"]');
      if (d && !d.open) d.open = true;
    });
  }

  var openBefore = [];
  document.addEventListener("htmx:wsBeforeMessage", function () { openBefore = openDetails(); });
  document.addEventListener("htmx:wsAfterMessage", function () { reopen(openBefore); stampHosts(); });
  document.addEventListener("DOMContentLoaded", stampHosts);

  // A host nobody reports under: said once, in words, and never retried (it will not
  // appear by retrying; a reload or the host picker is the way on).
  function unknownHost(reason) {
    state.unknown = true;
    clearTimeout(state.retryTimer);
    clearInterval(state.ticker);
    stopPolling();
    show("unknown", reason || "No host named '" + $("live").dataset.host + "' reports here");
  }

  function poll() {
    var live = $("live");
    var open = openDetails();
    var url = live.dataset.pollUrl + open.map(function (g) { return "&pcie=" + encodeURIComponent(g); }).join("");
    fetch(url, { headers: { "HX-Request": "true" }, cache: "no-cache" })
      .then(function (r) {
        if (r.status === 404) { unknownHost(); return null; }
        return r.status === 200 ? r.text() : null;
      })
      .then(function (html) {
        if (state.unknown) return;
        if (html) {
          htmx.swap(document.body, html, { swapStyle: "none" });
          reopen(open);
          stampHosts();
        }
        show("polling", "live over HTTP polling (WebSockets blocked)");
      })
      .catch(function () { show("offline", "offline: the server does not answer"); });
  }

  function startPolling() {
    stopPolling();
    var every = paceMs();
    if (every === null) { show("paused", "paused"); return; }
    poll();
    state.polling = setInterval(poll, every);
  }

  function stopPolling() {
    if (state.polling) clearInterval(state.polling);
    state.polling = null;
  }

  function socket() {
    var live = $("live");
    return live && live["htmx-internal-data"] && live["htmx-internal-data"].webSocket;
  }

  function countdown() {
    clearInterval(state.ticker);
    state.ticker = setInterval(function () {
      var conn = $("conn");
      if (!conn || conn.dataset.state !== "reconnecting") { clearInterval(state.ticker); return; }
      var s = Math.max(0, Math.ceil((state.nextRetryAt - Date.now()) / 1000));
      show("reconnecting", "reconnecting in " + s + " s (attempt " + state.retries + ")");
    }, 500);
  }

  document.addEventListener("htmx:wsConnecting", function () {
    if (!state.opened && !state.polling) show("connecting", "connecting…");
  });

  document.addEventListener("htmx:wsOpen", function () {
    state.opened = true; state.failures = 0; state.retries = 0;
    clearTimeout(state.retryTimer);
    stopPolling();
    show(state.pace === "paused" ? "paused" : "live", state.pace === "paused" ? "paused" : "live");
    var pace = $("pace");
    if (pace && pace.value !== "live") htmx.trigger($("pace-form"), "change");
    openDetails().forEach(function (g) { sendDetail(g, true); });  // a new socket knows none
  });

  // "toggle" does not bubble: listen while it goes down to the details element.
  document.addEventListener("toggle", function (evt) {
    var d = evt.target;
    if (d.matches && d.matches("details.pcie-detail[data-gpu]")) sendDetail(d.dataset.gpu, d.open);
  }, true);

  document.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail.event.code;
    if (code === UNKNOWN_HOST) { unknownHost(evt.detail.event.reason); return; }
    guard();
    state.failures += 1;
    if (!state.opened && state.failures >= POLL_AFTER_FAILURES) {
      if (!state.polling) startPolling();
      return;
    }
    state.retries += 1;
    if ([1006, 1011, 1012, 1013].indexOf(code) < 0) {
      // the extension does not retry these: say so, and try again ourselves now and then
      show("offline", "offline: connection closed, retrying every 30 s");
      clearTimeout(state.retryTimer);
      state.retryTimer = setTimeout(reconnect, 30000);
      return;
    }
    if (state.retries > MAX_RETRIES) {
      show("offline", "offline: the server does not answer, retrying every 30 s");
      return;
    }
    show("reconnecting", "reconnecting (attempt " + state.retries + ")");
    countdown();
  });

  // The extension's retry timers call init() on the same object; one that fires after a
  // Reconnect click must not close the socket that click opened.
  function guard() {
    var ws = socket();
    if (!ws || ws.guarded) return;
    var init = ws.init.bind(ws);
    ws.init = function () {
      var current = ws.socket;
      if (current && (current.readyState === 0 || current.readyState === 1)) return;
      init();
    };
    ws.guarded = true;
  }

  function reconnect() {
    if (state.unknown) return;
    clearTimeout(state.retryTimer);
    state.retries = 0;
    guard();
    var ws = socket();
    if (ws) ws.init();
  }

  document.addEventListener("click", function (evt) {
    if (evt.target.closest("#reconnect")) reconnect();
    if (evt.target.closest("#theme-toggle")) {
      var dark = !document.documentElement.classList.contains("dark");
      document.documentElement.classList.toggle("dark", dark);
      localStorage.setItem("hh-theme", dark ? "dark" : "light");
    }
  });

  document.addEventListener("change", function (evt) {
    if (evt.target.id === "pace") {
      state.pace = evt.target.value;
      if (state.polling || (!state.opened && state.failures >= POLL_AFTER_FAILURES)) startPolling();
      else if (state.opened) show(state.pace === "paused" ? "paused" : "live", state.pace === "paused" ? "paused" : "live");
    }
    if (evt.target.id === "host-picker") window.location.href = evt.target.value;
  });

  window.addEventListener("offline", function () { show("offline", "offline: no network"); });
  window.addEventListener("online", reconnect);
  window.hoofHearted = { state: state, poll: poll, reconnect: reconnect };
})();
