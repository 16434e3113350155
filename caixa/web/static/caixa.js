// caixa's page: the few things htmx does not do. No inline script anywhere (the CSP forbids it).
"use strict";

(function () {
  const csrf = () => document.body.dataset.csrf;

  // htmx requests carry the CSRF token too
  document.addEventListener("htmx:configRequest", (e) => {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });

  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (_, key) => (key in values ? values[key] : ""));

  // --- Drop: each file is sent as the body of its own request, and written whole ------------
  function setUpDrop(form) {
    const input = form.querySelector("#files");
    const zone = form.querySelector("#dropzone");
    const list = form.querySelector("#dropped");
    const max = Number(form.dataset.max);

    async function send(file) {
      const item = document.createElement("li");
      list.appendChild(item);
      if (file.size > max) {
        item.textContent = fill(form.dataset.tooLarge, { name: file.name });
        item.className = "problem";
        return;
      }
      item.textContent = file.name + " …";
      const inbox = form.querySelector("#inbox").value;
      const url = "/drop?inbox=" + encodeURIComponent(inbox) + "&name=" + encodeURIComponent(file.name);
      try {
        const reply = await fetch(url, {
          method: "POST",
          body: file,
          headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/octet-stream" },
          credentials: "same-origin",
        });
        if (!reply.ok) throw new Error(reply.status + " " + (await reply.text()).slice(0, 200));
        const landed = await reply.json();
        item.textContent = fill(form.dataset.done, { name: landed.name });
        item.className = "done";
        item.dataset.landed = landed.name;
      } catch (err) {
        item.textContent = fill(form.dataset.failed, { name: file.name, why: err.message });
        item.className = "problem";
      }
    }

    const sendAll = (files) => Array.from(files).forEach(send);
    input.addEventListener("change", () => {
      sendAll(input.files);
      input.value = "";
    });
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      sendAll(e.dataTransfer.files);
    });
    form.addEventListener("submit", (e) => e.preventDefault());
  }

  // --- Ask: the answer as it is written, then the whole of it with its sources --------------
  function setUpAsk(form, section) {
    let source = null;
    function ask(question) {
      if (source) source.close();
      section.replaceChildren();
      section.dataset.pieces = "0";
      const text = document.createElement("div");
      text.className = "answer-text writing";
      text.dataset.testid = "answer-writing";
      text.textContent = section.dataset.writing;
      section.appendChild(text);
      section.setAttribute("aria-busy", "true");
      let started = false;
      source = new EventSource("/ask/stream?q=" + encodeURIComponent(question));
      source.addEventListener("text", (e) => {
        section.dataset.pieces = String(Number(section.dataset.pieces || 0) + 1);
        if (!started) {
          text.textContent = "";
          started = true;
        }
        text.textContent += JSON.parse(e.data);
      });
      source.addEventListener("done", (e) => {
        source.close();
        section.innerHTML = e.data; // rendered and escaped by the server's templates
        section.setAttribute("aria-busy", "false");
      });
      const stop = (message) => {
        source.close();
        const p = document.createElement("p");
        p.className = "problem";
        p.setAttribute("role", "alert");
        p.textContent = message;
        section.replaceChildren(p);
        section.setAttribute("aria-busy", "false");
      };
      source.addEventListener("problem", (e) => stop(e.data));
      source.onerror = () => { if (source.readyState === EventSource.CLOSED) return; };
    }
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const question = form.querySelector("#question").value.trim();
      if (!question) return;
      history.replaceState(null, "", "/ask?q=" + encodeURIComponent(question));
      ask(question);
    });
    if (section.dataset.question) ask(section.dataset.question);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const drop = document.getElementById("drop");
    if (drop) setUpDrop(drop);
    const askForm = document.getElementById("ask-form");
    const answer = document.getElementById("answer");
    if (askForm && answer) setUpAsk(askForm, answer);
  });
})();
