// A small Markdown renderer that builds DOM nodes and never parses HTML.
//
// Model output is untrusted: every piece of text goes in through document.createTextNode, so
// "<script>" or "<img onerror=...>" in a reply shows up as those characters and never runs.
// Links become <a> only for http(s) URLs. Supported: fenced code, headings, lists, block
// quotes, paragraphs, and inline code, bold, italic and links.
"use strict";

const Markdown = (() => {
  const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_|\[([^\]]+)\]\(([^)\s]+)\)/;

  function inline(parent, text) {
    while (text.length) {
      const m = INLINE.exec(text);
      if (!m) { parent.appendChild(document.createTextNode(text)); return; }
      if (m.index > 0) parent.appendChild(document.createTextNode(text.slice(0, m.index)));
      let node;
      if (m[2] !== undefined) {
        node = document.createElement("code");
        node.textContent = m[2];
      } else if (m[3] !== undefined || m[4] !== undefined) {
        node = document.createElement("strong");
        inline(node, m[3] !== undefined ? m[3] : m[4]);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        node = document.createElement("em");
        inline(node, m[5] !== undefined ? m[5] : m[6]);
      } else {
        const url = m[8];
        if (/^https?:\/\//i.test(url)) {
          node = document.createElement("a");
          node.href = url;  // a property, not markup: the browser URL-parses it
          node.rel = "noopener noreferrer nofollow";
          node.target = "_blank";
          node.textContent = m[7];
        } else {
          node = document.createTextNode(m[0]);
        }
      }
      parent.appendChild(node);
      text = text.slice(m.index + m[0].length);
    }
  }

  function render(source) {
    const root = document.createDocumentFragment();
    const lines = source.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    let paragraph = [];
    const flush = () => {
      if (!paragraph.length) return;
      const p = document.createElement("p");
      paragraph.forEach((line, k) => {
        if (k) p.appendChild(document.createElement("br"));
        inline(p, line);
      });
      root.appendChild(p);
      paragraph = [];
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = /^\s*(```|~~~)\s*([\w+-]*)/.exec(line);
      if (fence) {
        flush();
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i += 1;  // the closing fence (or the end of a still-streaming reply)
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        if (fence[2]) code.dataset.lang = fence[2];
        code.textContent = body.join("\n");
        pre.appendChild(code);
        root.appendChild(pre);
        continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) {
        flush();
        const h = document.createElement("h" + Math.min(6, heading[1].length + 2));
        inline(h, heading[2]);
        root.appendChild(h);
        i += 1;
        continue;
      }
      const item = /^\s*([-*+]|\d+[.)])\s+/.exec(line);
      if (item) {
        flush();
        const list = document.createElement(/\d/.test(item[1]) ? "ol" : "ul");
        while (i < lines.length) {
          const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
          if (!m) break;
          const li = document.createElement("li");
          inline(li, m[2]);
          list.appendChild(li);
          i += 1;
        }
        root.appendChild(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        flush();
        const quote = document.createElement("blockquote");
        const body = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*>\s?/, ""));
        quote.appendChild(render(body.join("\n")));
        root.appendChild(quote);
        continue;
      }
      if (!line.trim()) { flush(); i += 1; continue; }
      paragraph.push(line);
      i += 1;
    }
    flush();
    return root;
  }

  return { render };
})();
