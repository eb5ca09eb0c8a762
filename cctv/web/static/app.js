"use strict";
// The search page: the form <-> the URL's query string <-> /api/search; results as cards.
const FIELDS = ["q", "camera", "after", "before", "min_seconds", "min_score", "limit"];

function attrSelect(name, values, kind) {
  const s = el("select", {"data-attr": name, "data-kind": kind, "aria-label": name},
               el("option", {value: "", text: name + ": any"}));
  for (const v of values) s.append(el("option", {value: v, text: name + ": " + v}));
  return s;
}

async function setup() {
  const v = await getJSON("/api/vocabulary");
  document.getElementById("stats").textContent = v.tracks + " tracks, " + v.cameras.length + " camera(s)" +
    (v.span ? ", " + when(v.span[0]) + " – " + when(v.span[1]) + " UTC" : "");
  const cam = document.getElementById("camera");
  for (const c of v.cameras) cam.append(el("option", {value: c, text: c}));
  const box = document.getElementById("attrs");
  for (const b of v.binary) box.append(attrSelect(b.name, b.values, "binary"));
  for (const g of v.groups) box.append(attrSelect(g.name, g.values, "group"));
  for (const a of v.attributes) box.append(attrSelect(a, ["yes", "no"], "attr"));
}

function conditions() {
  const out = [];
  for (const s of document.querySelectorAll("select[data-attr]")) {
    if (!s.value) continue;
    // the query language: a two-way attribute by its display name, anything else as name=value
    out.push(s.getAttribute("data-kind") === "binary" ? s.value : s.getAttribute("data-attr") + "=" + s.value);
  }
  return out.join(", ");
}

function fromURL() {
  const p = new URLSearchParams(location.search);
  for (const f of FIELDS) if (p.has(f)) document.getElementById(f).value = p.get(f);
  document.getElementById("min_score_out").value = Number(document.getElementById("min_score").value).toFixed(2);
  for (const c of (p.get("attrs") || "").split(",").map(x => x.trim()).filter(Boolean)) {
    const [k, val] = c.includes("=") ? c.split("=") : [null, c];
    for (const s of document.querySelectorAll("select[data-attr]")) {
      const mine = k ? s.getAttribute("data-attr") === k
                     : s.getAttribute("data-kind") === "binary" && [...s.options].some(o => o.value === val);
      if (mine) s.value = val;
    }
  }
  return p;
}

function card(r) {
  const a = el("a", {class: "card", href: "/track/" + r.id, "data-track": r.id});
  a.append(el("img", {src: r.thumbnail, alt: "track " + r.track_id, loading: "lazy"}));
  const meta = el("div", {class: "meta"},
    el("div", {class: "score", text: "score " + Number(r.score).toFixed(3)}),
    el("div", {class: "cam", text: r.camera + " · #" + r.track_id}),
    el("div", {class: "time", text: when(r.start_time) + " (" + r.duration_s + " s)"}));
  const ul = el("ul", {class: "labels"});
  for (const l of r.labels) ul.append(labelItem(l));
  meta.append(ul);
  a.append(meta);
  return a;
}

async function run(params) {
  const grid = document.getElementById("grid"), reading = document.getElementById("reading");
  grid.textContent = "";
  reading.className = "";
  try {
    const res = await getJSON("/api/search?" + params.toString());
    reading.textContent = "";
    reading.append(el("span", {text: params.get("like") ? "More like track " + params.get("like") + ". " : ""}),
                   el("span", {text: "Read as: "}), el("code", {id: "read-as", text: res.query || "(everything)"}),
                   el("span", {text: " — " + res.results.length + " result(s) of " + res.n_tracks + " tracks"}));
    if (res.unknown && res.unknown.length) {
      reading.append(el("div", {class: "unknown", id: "unknown",
                               text: "Not understood (ignored): " + res.unknown.join(", ")}));
    }
    for (const r of res.results) grid.append(card(r));
  } catch (e) {
    reading.className = "error";
    reading.textContent = e.message;
  }
}

function submit(ev) {
  ev.preventDefault();
  const p = new URLSearchParams();
  for (const f of FIELDS) {
    const v = document.getElementById(f).value;
    if (v && !(f === "min_seconds" && v === "0") && !(f === "min_score" && Number(v) === 0)) p.set(f, v);
  }
  const c = conditions();
  if (c) p.set("attrs", c);
  const like = new URLSearchParams(location.search).get("like");
  if (like && !document.getElementById("q").dataset.fresh) p.set("like", like);
  history.pushState(null, "", "/?" + p.toString());
  run(p);
}

document.addEventListener("DOMContentLoaded", async () => {
  await setup();
  const p = fromURL();
  document.getElementById("search").addEventListener("submit", submit);
  document.getElementById("q").addEventListener("input", e => { e.target.dataset.fresh = "1"; });
  const slider = document.getElementById("min_score");
  slider.addEventListener("input", () => {
    document.getElementById("min_score_out").value = Number(slider.value).toFixed(2);
  });
  slider.addEventListener("change", () => document.getElementById("go").click());
  window.addEventListener("popstate", () => run(fromURL()));
  if ([...p.keys()].length) run(p);
});
