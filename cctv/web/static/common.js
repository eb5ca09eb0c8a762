"use strict";
// Shared helpers of the footage search pages (no external scripts: the app works offline).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const k of kids) if (k) e.append(k);
  return e;
}
function when(iso) { return iso ? iso.replace("T", " ").replace("Z", "") : ""; }
function labelItem(l) {
  return el("li", {title: "P(" + l.key + " = " + l.value + ")"}, el("span", {text: l.text}),
            el("span", {class: "p", text: Number(l.p).toFixed(2)}));
}
async function getJSON(url) {
  const r = await fetch(url, {credentials: "same-origin"});
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
