// The operator inbox. Data is always put into the page with textContent, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("inbox");
  if (!root) return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const me = root.dataset.user || "api";
  const $ = (id) => document.getElementById(id);
  const state = { q: "", limit: 50, shown: 50, selected: null, test: false, timer: null };
  // On a touch keyboard there is no Shift+Enter: there Enter makes a new line and the Send button sends.
  const enterSends = !window.matchMedia("(pointer: coarse)").matches;

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

  // The conversation's state, and whether its latest outgoing message failed (a failed send does not
  // change the state: the AI may still be answering, or a person may hold the conversation).
  function stateLabel(c) {
    const sendFailed = c.last_outbound_status === "failed";
    if (c.is_test) return ["test", "test chat" + (c.state === "ai" ? "" : " · " + c.state.replace("_", " "))];
    if (c.state === "needs_human") return ["needs_human", "needs human"];
    if (c.state === "paused") return ["paused", c.paused_until ? "paused · " + timeLeft(c.paused_until) + " left" : "paused by a human"];
    if (c.state === "failed") return ["failed", "failed"];
    if (sendFailed) return ["failed", "failed · not delivered"];
    return ["ai", "AI answering"];
  }

  function extraFailed(c) {
    return c.last_outbound_status === "failed" && (c.is_test || c.state === "paused" || c.state === "needs_human");
  }

  function badge(cls, label) {
    return el("span", "badge " + cls, label);
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
      li.tabIndex = 0;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(c.customer_id === state.selected));
      const top = el("div", "conv-top");
      top.append(el("strong", "conv-name", c.name || c.wa_id || c.customer_id));
      const [cls, label] = stateLabel(c);
      top.append(badge(cls, label));
      if (extraFailed(c)) top.append(badge("failed", "last send failed"));
      li.append(top);
      if (c.wa_id) li.append(el("div", "conv-number muted", "+" + c.wa_id));
      li.append(el("div", "conv-preview", c.last_message || ""));
      // In one's own test chat one writes as the customer; anyone else's is answered as an operator.
      const own = c.is_test && c.customer_id === "test-" + me;
      li.addEventListener("click", () => select(c.customer_id, own));
      li.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(c.customer_id, own); }
      });
      list.append(li);
    }
    const empty = $("list-empty");
    empty.textContent = state.q
      ? "No conversations match “" + state.q + "”."
      : "No conversations yet. They appear here as soon as a customer writes.";
    empty.hidden = items.length > 0;
    $("more").hidden = items.length < state.shown;
  }

  function tick(m) {
    if (m.direction === "in") return "";
    return { queued: "🕓", sending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓ read", failed: "✗ failed", unknown: "? not confirmed" }[m.status] || m.status;
  }

  // Photos and stickers as lazy previews (a click opens the full size), voice notes as a player with
  // the transcript under it, videos as a player, documents as a link. All come through /api/media/{id}.
  function mediaNode(m) {
    if (!m.media) return null;
    if (m.type === "image" || m.type === "sticker") {
      const a = el("a", "media-link");
      a.href = m.media;
      a.target = "_blank";
      a.rel = "noopener";
      a.title = "Open the full-size " + (m.type === "image" ? "photo" : "sticker");
      const img = el("img", "media" + (m.type === "sticker" ? " sticker" : ""));
      img.loading = "lazy";
      img.alt = m.type === "image" ? (m.text ? "Photo: " + m.text : "Photo from the customer") : "Sticker";
      img.src = m.media;
      a.append(img);
      return a;
    }
    if (m.type === "audio" || m.type === "video") {
      const player = el(m.type);
      player.controls = true;
      player.preload = "none";
      player.src = m.media;
      return player;
    }
    const a = el("a", "media-link", "Open the " + (m.type === "document" ? "document" : m.type));
    a.href = m.media;
    a.target = "_blank";
    a.rel = "noopener";
    return a;
  }

  function messageNode(m) {
    const li = el("li", "msg " + (m.direction === "out" ? "out " : "") + m.author);
    li.dataset.author = m.author;
    li.dataset.type = m.type || "text";
    const media = m.type && !["text", "interactive", "button"].includes(m.type);
    if (media) {
      const node = mediaNode(m);
      if (node) li.append(node);
      else li.append(el("em", "", m.type === "audio" ? "voice note" : "[" + m.type + "]"));
      if (m.type === "audio") {
        li.append(el("span", "transcript", m.text ? "Transcript: " + m.text : "(no transcript yet)"));
      } else if (m.text) {
        li.append(el("span", "transcript", m.text));
      }
    } else {
      li.append(document.createTextNode(m.text || ""));
    }
    const who = { customer: "customer", ai: "AI", operator: "operator", system: "automatic" }[m.author] || m.author;
    const when = new Date(m.created_at * 1000).toLocaleString();
    li.append(el("span", "meta", who + " · " + when + (tick(m) ? " · " + tick(m) : "")));
    if (m.error) li.append(el("span", "meta fail", m.error));
    return li;
  }

  async function loadThread() {
    if (!state.selected) return;
    const wanted = state.selected;
    const res = await api("/api/conversations/" + encodeURIComponent(wanted) + "/messages");
    if (!res.ok || state.selected !== wanted) return;
    const c = res.body.conversation;
    $("thread-name").textContent = c.name || c.wa_id || c.customer_id;
    $("thread-number").textContent = c.wa_id ? "+" + c.wa_id : (c.is_test ? "" : c.customer_id);
    const [cls, label] = stateLabel(c);
    const stateBadge = $("thread-state");
    stateBadge.className = "badge " + cls;
    stateBadge.textContent = label;
    $("thread-failed").hidden = !extraFailed(c);
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    // Unchanged messages keep their nodes: a voice note being played, or a photo, is not reloaded.
    const shown = new Map([...list.children].map((li) => [li.dataset.key, li]));
    list.replaceChildren(...(res.body.messages || []).map((m) => {
      const key = m.id + "|" + m.status + "|" + (m.text || "") + "|" + (m.error || "");
      const node = shown.get(key) || messageNode(m);
      node.dataset.key = key;
      return node;
    }));
    if (atBottom || list.dataset.for !== wanted) list.scrollTop = list.scrollHeight;
    list.dataset.for = wanted;
    const held = c.state === "paused" || c.state === "needs_human";
    $("pause").hidden = held;
    $("resume").hidden = !held;
  }

  function showThread(open) {
    root.classList.toggle("open", open);
    $("thread").hidden = !open;
    $("thread-empty").hidden = open;
  }

  function select(id, test) {
    if (state.selected !== id) {
      // Nothing of the previous conversation may stay on screen while the new one loads.
      $("messages").replaceChildren();
      $("thread-name").textContent = "";
      $("thread-number").textContent = "";
      $("thread-state").textContent = "";
      $("thread-failed").hidden = true;
      $("pause").hidden = true;
      $("resume").hidden = true;
    }
    state.selected = id;
    state.test = test;
    showThread(true);
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
    if (!state.selected) return;
    if (!text) { $("reply-error").textContent = "Write a message first."; return; }
    const path = state.test ? "/api/test-chat/messages" : "/api/conversations/" + encodeURIComponent(state.selected) + "/messages";
    const res = await api(path, { method: "POST", body: JSON.stringify({ text: text }) });
    if (res.ok) { box.value = ""; $("reply-error").textContent = ""; refreshSoon(); }
    else { $("reply-error").textContent = res.body.error || "Could not send (HTTP " + res.status + ")"; }
  });
  $("reply-text").addEventListener("keydown", (event) => {
    // isComposing: Enter that confirms an IME composition (Japanese, Chinese…) must not send.
    if (event.key === "Enter" && enterSends && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("reply").requestSubmit();
    }
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
  $("back").addEventListener("click", () => {
    state.selected = null;
    showThread(false);
    loadList();
  });
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
