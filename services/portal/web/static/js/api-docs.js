// The browsable API page: renders /api/v1/openapi.json (served by stamen; no inline script under the CSP).
"use strict";
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}
function resolve(doc, schema) {
  if (schema && schema.$ref) return doc.components.schemas[schema.$ref.split("/").pop()] || schema;
  return schema;
}
fetch("/api/v1/openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("intro").textContent = doc.info.description;
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      (byTag[op.tags[0]] = byTag[op.tags[0]] || []).push([method.toUpperCase(), path, op]);
    }
  }
  const ops = document.getElementById("ops");
  for (const [tag, list] of Object.entries(byTag)) {
    ops.append(el("h2", {}, tag));
    for (const [method, path, op] of list) {
      const flags = [];
      if (!op.security || op.security.length === 0) flags.push("public");
      if (op["x-stamen-operator-only"]) flags.push("operators");
      if (op["x-stamen-tenant-scoped"]) flags.push("tenant-scoped");
      const summary = el("summary", {}, el("span", {class: "m " + method}, method), path + " — " + op.summary,
                         ...flags.map(f => el("span", {class: "tag"}, f)));
      const body = [];
      if (op.parameters) body.push(el("p", {class: "note"}, "Parameters: " +
        op.parameters.map(p => p.name + " (" + p.in + (p.required ? ", required" : "") + ")").join(", ")));
      if (op.requestBody) for (const [media, c] of Object.entries(op.requestBody.content)) {
        body.push(el("p", {class: "note"}, "Request body (" + media + ")"),
                  el("pre", {}, JSON.stringify(resolve(doc, c.schema), null, 2)));
      }
      for (const [status, resp] of Object.entries(op.responses)) {
        for (const [media, c] of Object.entries(resp.content || {})) {
          body.push(el("p", {class: "note"}, "Response " + status + " (" + media + ")"),
                    el("pre", {}, JSON.stringify(resolve(doc, c.schema), null, 2)));
        }
      }
      ops.append(el("details", {}, summary, ...body));
    }
  }
}).catch(err => { document.getElementById("intro").textContent = "Could not load the document: " + err; });
