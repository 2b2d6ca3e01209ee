// The operator inbox. Data is always put into the page with textContent, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("inbox");
  if (!root) return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const me = root.dataset.user || "api";
  const $ = (id) => document.getElementById(id);
  const state = { q: "", limit: 50, shown: 50, selected: null, test: false, timer: null };

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ "X-CSRF-Token": csrf, "Content-Type": "application/json" }, opts.headers || {});
    const response = await fetch(path, opts);
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) { window.location = "/login?next=/inbox"; }
    return { ok: response.ok, status: response.status, body: body || {} };
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function timeLeft(until) {
    const s = Math.max(0, Math.round(until - Date.now() / 1000));
    return s >= 60 ? Math.floor(s / 60) + " min" : s + " s";
  }

  function stateLabel(c) {
    if (c.is_test) return ["test", "test chat" + (c.state === "ai" ? "" : " · " + c.state.replace("_", " "))];
    if (c.state === "needs_human") return ["needs_human", "needs human"];
    if (c.state === "paused") return ["paused", c.paused_until ? "paused · " + timeLeft(c.paused_until) + " left" : "paused by a human"];
    if (c.state === "failed") return ["failed", "failed"];
    return ["ai", "AI answering"];
  }

  async function loadList() {
    const params = new URLSearchParams({ limit: String(state.shown), q: state.q });
    const res = await api("/api/conversations?" + params.toString());
    if (!res.ok) return;
    const list = $("conversations");
    list.replaceChildren();
    const items = res.body.conversations || [];
    for (const c of items) {
      const li = el("li");
      li.dataset.id = c.customer_id;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(c.customer_id === state.selected));
      const top = el("div", "conv-top");
      top.append(el("strong", "", c.name || c.wa_id || c.customer_id));
      const [cls, label] = stateLabel(c);
      top.append(el("span", "badge " + cls, label));
      li.append(top);
      if (c.wa_id) li.append(el("div", "muted", "+" + c.wa_id));
      li.append(el("div", "conv-preview", c.last_message || ""));
      li.addEventListener("click", () => select(c.customer_id, false));
      list.append(li);
    }
    $("list-empty").hidden = items.length > 0;
    $("more").hidden = items.length < state.shown;
  }

  function tick(m) {
    if (m.direction === "in") return "";
    return { queued: "🕓", sending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓ read", failed: "✗ failed", unknown: "? not confirmed" }[m.status] || m.status;
  }

  async function loadThread() {
    if (!state.selected) return;
    const res = await api("/api/conversations/" + encodeURIComponent(state.selected) + "/messages");
    if (!res.ok) return;
    const c = res.body.conversation;
    $("thread-name").textContent = c.name || c.wa_id || c.customer_id;
    $("thread-number").textContent = c.wa_id ? "+" + c.wa_id : (c.is_test ? "" : c.customer_id);
    const [cls, label] = stateLabel(c);
    const badge = $("thread-state");
    badge.className = "badge " + cls;
    badge.textContent = label;
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.replaceChildren();
    for (const m of res.body.messages || []) {
      const li = el("li", "msg " + (m.direction === "out" ? "out " : "") + m.author);
      li.dataset.author = m.author;
      let text = m.text || "";
      if (m.type && m.type !== "text" && m.type !== "interactive" && m.type !== "button") {
        const label = m.type === "audio" ? "🎤 voice note" + (m.text ? " — transcript:" : "") : "[" + m.type + "]";
        li.append(el("em", "", label + " "));
        if (m.media) {
          const a = el("a", "", "open");
          a.href = m.media;
          a.target = "_blank";
          a.rel = "noopener";
          li.append(a, document.createTextNode(" "));
        }
      }
      li.append(document.createTextNode(text));
      const who = { customer: "customer", ai: "AI", operator: "operator", system: "automatic" }[m.author] || m.author;
      const when = new Date(m.created_at * 1000).toLocaleString();
      const meta = el("span", "meta", who + " · " + when + (tick(m) ? " · " + tick(m) : ""));
      li.append(meta);
      if (m.error) li.append(el("span", "meta fail", m.error));
      list.append(li);
    }
    if (atBottom || list.dataset.for !== state.selected) list.scrollTop = list.scrollHeight;
    list.dataset.for = state.selected;
    $("pause").hidden = c.state === "paused" || c.state === "needs_human";
    $("resume").hidden = !($("pause").hidden);
  }

  function select(id, test) {
    state.selected = id;
    state.test = test;
    root.classList.add("open");
    document.querySelector(".inbox-thread").hidden = false;
    $("reply-label").textContent = test ? "Write as the customer (test chat: nothing goes to WhatsApp)" : "Reply as operator (pauses the AI)";
    $("reply-error").textContent = "";
    loadThread();
    loadList();
  }

  function refreshSoon() {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => { loadList(); loadThread(); }, 120);
  }

  $("reply").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("reply-text");
    const text = box.value.trim();
    if (!text || !state.selected) return;
    const path = state.test ? "/api/test-chat/messages" : "/api/conversations/" + encodeURIComponent(state.selected) + "/messages";
    const res = await api(path, { method: "POST", body: JSON.stringify({ text: text }) });
    if (res.ok) { box.value = ""; $("reply-error").textContent = ""; refreshSoon(); }
    else { $("reply-error").textContent = res.body.error || "Could not send (HTTP " + res.status + ")"; }
  });
  $("pause").addEventListener("click", async () => {
    await api("/api/conversations/" + encodeURIComponent(state.selected) + "/pause", { method: "POST" });
    refreshSoon();
  });
  $("resume").addEventListener("click", async () => {
    await api("/api/conversations/" + encodeURIComponent(state.selected) + "/resume", { method: "POST" });
    refreshSoon();
  });
  $("test-chat").addEventListener("click", () => select("test-" + me, true));
  $("back").addEventListener("click", () => { root.classList.remove("open"); });
  $("more").addEventListener("click", () => { state.shown += state.limit; loadList(); });
  let searchTimer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.q = e.target.value.trim(); state.shown = state.limit; loadList(); }, 200);
  });

  // Live updates: the browser resends Last-Event-ID on reconnect, and the server replays what was missed.
  const events = new EventSource("/inbox/events");
  for (const kind of ["message", "status", "conversation", "reset"]) events.addEventListener(kind, refreshSoon);
  events.onopen = refreshSoon;
  loadList();
  setInterval(loadList, 30000);  // keeps cooldown countdowns fresh
})();
