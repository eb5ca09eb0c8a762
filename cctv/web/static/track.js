"use strict";
// The track page: its clip (the index's H.264 copy of the video, from the track's first to last frame),
// thumbnail, times, labels with confidences, and "more like this" (search by example from this track).
document.addEventListener("DOMContentLoaded", async () => {
  const id = location.pathname.split("/").pop();
  let t;
  try { t = await getJSON("/api/track/" + encodeURIComponent(id)); }
  catch (e) { document.getElementById("track").textContent = e.message; return; }
  document.title = "Track " + t.track_id + " · " + t.camera;
  document.getElementById("stats").textContent = t.camera + " · track #" + t.track_id;
  document.getElementById("thumb").src = t.thumbnail;
  const dl = document.getElementById("facts");
  const facts = [["Camera", t.camera], ["From", when(t.start_time) + " UTC"], ["To", when(t.end_time) + " UTC"],
                 ["Seen", t.duration_s + " s (frames " + t.first_frame + "–" + t.last_frame + ")"],
                 ["Video", t.video.split("/").pop()]];
  for (const [k, v] of facts) dl.append(el("dt", {text: k}), el("dd", {text: v}));
  const ul = document.getElementById("labels");
  for (const l of t.labels) ul.append(labelItem(l));
  if (t.has_embedding) document.getElementById("like").href = "/?like=" + t.id;
  else document.getElementById("like").remove();  // no embedding head in this checkpoint
  const video = document.getElementById("clip"), hint = document.getElementById("cliphint");
  if (t.clip) {
    const end = t.offset_s + t.duration_s;
    video.src = t.clip + "#t=" + t.offset_s + "," + end.toFixed(2);
    document.getElementById("full").href = t.clip;
    hint.textContent = "Plays " + t.offset_s + "–" + end.toFixed(2) + " s of the annotated video (H.264).";
  } else {
    video.remove();
    document.getElementById("full").remove();
    hint.textContent = "No browser-playable copy of this video in the index.";
  }
});
