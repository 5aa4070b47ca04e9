// Uploads straight to S3: the portal hands out a presigned POST for one key in a bucket the caller may
// write (POST /uploads/presign, CSRF header), and the browser sends the file to S3 with a progress bar.
"use strict";
(() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  const presign = async (request) => {
    const answer = await fetch("/uploads/presign", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(request),
    });
    if (!answer.ok) throw new Error((await answer.text()).slice(0, 300) || `upload refused (${answer.status})`);
    return answer.json();
  };

  const send = (post, file, onProgress) => new Promise((resolve, reject) => {
    const data = new FormData();
    Object.entries(post.fields).forEach(([k, v]) => data.append(k, v));
    data.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", post.url);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    xhr.addEventListener("load", () => (xhr.status < 300 ? resolve(post.uri) : reject(new Error(`S3 answered ${xhr.status}`))));
    xhr.addEventListener("error", () => reject(new Error("the upload could not reach S3")));
    xhr.send(data);
  });

  const safeName = (name) => name.replace(/[^A-Za-z0-9._-]+/g, "_");

  // The chosen file's name beside the (transparent) file input: the whole name in its title when the cell
  // is too narrow and CSS ends it with an ellipsis.
  const showName = (input) => {
    const shown = input.closest(".file-pick")?.querySelector(".file-name");
    if (!shown) return;
    const name = input.files.length ? input.files[0].name : "No file chosen";
    shown.textContent = name;
    shown.title = name;
  };

  // A page restored from the back-forward cache keeps its chosen files: show their names again.
  window.addEventListener("pageshow", () => document.querySelectorAll("input[type=file][data-upload-for]").forEach(showName));

  // New workset / generator: a file input next to each R1/R2 field fills that field with the S3 URI.
  document.addEventListener("change", async (e) => {
    const input = e.target;
    if (!input.matches?.("input[type=file][data-upload-for]")) return;
    showName(input);
    if (!input.files.length) return;
    const form = input.closest("form");
    const target = document.getElementById(input.dataset.uploadFor);
    const progress = document.getElementById(`${input.dataset.uploadFor}-progress`);
    const bar = progress?.querySelector("progress");
    const words = progress?.querySelector(".upload-text");
    const file = input.files[0];
    const folder = safeName(form.querySelector('[name="name"]')?.value || "unnamed");
    const tenant = form.querySelector('[name="tenant"]')?.value || undefined;
    if (progress) progress.hidden = false;
    try {
      const post = await presign({ bucket: form.dataset.uploadBucket, key: `uploads/${folder}/${safeName(file.name)}`, size: file.size, tenant });
      const uri = await send(post, file, (f) => { if (bar) bar.value = Math.round(f * 100); if (words) words.textContent = ` ${Math.round(f * 100)}%`; });
      if (bar) bar.value = 100;
      if (words) words.textContent = " uploaded";
      target.value = uri;
      target.dispatchEvent(new Event("change", { bubbles: true }));
    } catch (err) {
      if (words) words.textContent = ` ${err.message}`;
    }
  });

  // Files page: upload every chosen file into the folder shown, then show the folder again.
  const filesForm = document.querySelector("form.upload-form");
  filesForm?.querySelector("input[type=file]")?.addEventListener("change", async (e) => {
    const status = document.getElementById("upload-status");
    const { bucket, prefix, tenant } = filesForm.dataset;
    for (const file of e.target.files) {
      const row = document.createElement("div");
      const bar = document.createElement("progress");
      bar.max = 100; bar.value = 0;
      row.append(`${file.name} `, bar);
      status.append(row);
      try {
        const post = await presign({ bucket, key: `${prefix}${safeName(file.name)}`, size: file.size, tenant: tenant || undefined });
        await send(post, file, (f) => { bar.value = Math.round(f * 100); });
        bar.value = 100;
      } catch (err) {
        row.append(` ${err.message}`);
        return;
      }
    }
    const params = new URLSearchParams({ bucket, prefix, notice: "uploaded" });
    if (tenant) params.set("tenant", tenant);
    window.location.assign(`/files?${params}`);
  });
})();
