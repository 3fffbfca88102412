// Turning pasted text and uploaded files into documents. Files are read exactly as
// `embedgate ingest` reads them (same ids, same texts), so either can update what the other
// wrote without re-embedding it.

export const SHORT = 5; // entries shorter than this many characters get a warning

/** A stable id from the text (cyrb53), so pasting the same entry again re-embeds nothing. */
export function textId(text) {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  const hash = 4294967296 * (2097151 & h2) + (h1 >>> 0);
  return `kb:${hash.toString(16).padStart(14, "0")}`;
}

/** One document per non-empty line. */
export function fromLines(text) {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => ({ id: textId(line), text: line }));
}

function fromTxt(text, prefix) {
  const docs = [];
  text.split(/\r?\n/).forEach((line, index) => {
    if (line.trim()) docs.push({ id: `${prefix}:${index + 1}`, text: line });
  });
  return docs;
}

/** One document per paragraph, with the heading it sits under as `section`. */
function fromMarkdown(text, prefix) {
  const docs = [];
  let heading = "";
  let block = [];
  let start = 0;
  const flush = () => {
    if (!block.length) return;
    docs.push({ id: `${prefix}:${start}`, text: block.join(" "),
      metadata: heading ? { section: heading } : {} });
    block = [];
  };
  [...text.split(/\r?\n/), ""].forEach((line, index) => {
    if (line.startsWith("#") || !line.trim()) {
      flush();
      if (line.startsWith("#")) heading = line.replace(/^#+/, "").trim();
      return;
    }
    if (!block.length) start = index + 1;
    block.push(line.trim());
  });
  return docs;
}

function fromJsonl(text, prefix) {
  const docs = [];
  text.split(/\r?\n/).forEach((line, index) => {
    if (!line.trim()) return;
    let doc;
    try {
      doc = JSON.parse(line);
    } catch {
      throw new Error(`${prefix}, line ${index + 1}: not valid JSON.`);
    }
    if (!doc || typeof doc !== "object" || typeof doc.text !== "string") {
      throw new Error(`${prefix}, line ${index + 1}: expected an object with a "text" string.`);
    }
    const out = { text: doc.text };
    if (typeof doc.id === "string" && doc.id) out.id = doc.id;
    if (doc.metadata && typeof doc.metadata === "object") out.metadata = doc.metadata;
    docs.push(out);
  });
  return docs;
}

/** The documents of an uploaded file, by its extension (txt is the default). */
export async function fromFile(file) {
  const text = await file.text();
  const ext = file.name.toLowerCase().split(".").pop();
  if (ext === "jsonl" || ext === "ndjson") return fromJsonl(text, file.name);
  if (ext === "md" || ext === "markdown") return fromMarkdown(text, file.name);
  return fromTxt(text, file.name);
}

/** Entries shorter than SHORT characters (counted in code points, so 你好 is 2). */
export function shortEntries(docs) {
  return docs.filter((doc) => [...doc.text].length < SHORT).map((doc) => doc.text);
}

/** Drop repeated ids, keeping the first: one upsert must not name an id twice. */
export function unique(docs) {
  const seen = new Set();
  return docs.filter((doc) => {
    if (!doc.id) return true;
    if (seen.has(doc.id)) return false;
    seen.add(doc.id);
    return true;
  });
}

export function batches(docs, size) {
  const out = [];
  for (let i = 0; i < docs.length; i += size) out.push(docs.slice(i, i + size));
  return out;
}
