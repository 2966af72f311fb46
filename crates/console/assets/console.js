// Flywheel console: charts (uPlot) and the playground's stream. No inline script anywhere:
// the Content Security Policy allows only files served from /console/assets.
"use strict";

(function () {
  function parse(el, name) {
    try { return JSON.parse(el.dataset[name] || "[]"); } catch (e) { return []; }
  }

  function drawDaily(el) {
    if (typeof uPlot === "undefined") return;
    const xs = parse(el, "x"), requests = parse(el, "requests"), tokens = parse(el, "tokens");
    const width = () => Math.max(260, el.clientWidth || 600);
    const opts = {
      width: width(),
      height: 220,
      series: [
        {},
        { label: "Requests", stroke: "#0b5cad", fill: "rgba(11,92,173,0.35)", scale: "req",
          paths: uPlot.paths.bars({ size: [0.6, 40] }) },
        { label: "Tokens", stroke: "#a4161a", width: 2, scale: "tok" },
      ],
      axes: [
        {},
        { scale: "req", label: "Requests" },
        { scale: "tok", side: 1, label: "Tokens", grid: { show: false } },
      ],
      scales: { x: { time: true }, req: { range: (u, min, max) => [0, Math.max(1, max)] },
                tok: { range: (u, min, max) => [0, Math.max(1, max)] } },
    };
    const plot = new uPlot(opts, [xs, requests, tokens], el);
    window.addEventListener("resize", () => plot.setSize({ width: width(), height: 220 }));
  }

  function text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  async function bill(requestId) {
    for (let i = 0; i < 20; i++) {
      const res = await fetch("/console/api/bill/" + encodeURIComponent(requestId),
                              { credentials: "same-origin" });
      if (!res.ok) return null;
      const b = await res.json();
      if (b.state !== "open") return b;
      await new Promise((r) => setTimeout(r, 150));
    }
    return null;
  }

  async function chat(form) {
    const answer = document.getElementById("pg-answer");
    const send = document.getElementById("pg-send");
    const key = form.dataset.key;
    const data = new FormData(form);
    const messages = [];
    const system = String(data.get("system") || "").trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push({ role: "user", content: String(data.get("message") || "") });
    const body = {
      model: String(data.get("model") || ""),
      messages: messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number(data.get("temperature") || 0.7),
      max_tokens: Number(data.get("max_tokens") || 128),
    };
    answer.textContent = "";
    text("pg-usage", "Generating…");
    send.disabled = true;
    let id = null, usage = null;
    try {
      const res = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + key },
        body: JSON.stringify(body),
      });
      if (!res.ok) {
        const err = await res.json().catch(() => ({}));
        text("pg-usage", "Refused: " + ((err.error && err.error.message) || res.status));
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of frame.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const payload = line.slice(6);
            if (payload === "[DONE]") continue;
            let chunk;
            try { chunk = JSON.parse(payload); } catch (e) { continue; }
            if (chunk.error) { text("pg-usage", "Error: " + chunk.error.message); continue; }
            id = chunk.id || id;
            if (chunk.usage) usage = chunk.usage;
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            // Model output is text: appended as a text node, never parsed as HTML.
            if (delta && delta.content) answer.append(document.createTextNode(delta.content));
          }
        }
      }
      let summary = usage
        ? usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens"
        : "no usage reported";
      text("pg-usage", summary + "; computing cost…");
      const b = id ? await bill(id) : null;
      if (b) {
        summary += "; cost " + b.cost_display + " (" + b.grant_tokens + " free tokens)";
        document.getElementById("pg-usage").dataset.cost = String(b.cost);
        document.getElementById("pg-usage").dataset.grantTokens = String(b.grant_tokens);
      }
      text("pg-usage", summary);
    } catch (e) {
      text("pg-usage", "The request failed: " + e.message);
    } finally {
      send.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll('[data-chart="daily"]').forEach(drawDaily);
    const form = document.getElementById("playground");
    if (form) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        chat(form);
      });
    }
  });
})();
