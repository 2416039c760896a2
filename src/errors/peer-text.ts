/**
 * peerText — text a peer sent (the guest agent's error messages and other guest strings) made safe to
 * carry in hull's own messages, which reach containerd, its logs, kubelet and `kubectl describe`.
 *
 * The guest is hostile: its text is cut to a few KiB, and control characters (ANSI escapes, NULs,
 * carriage returns, C1 controls, bidi overrides, lone surrogates) become U+FFFD, so they can neither
 * drive a terminal nor hide text. Newlines and tabs are kept: multi-line errors (crun's, a console
 * tail) stay readable, and every consumer quotes or escapes them (containerd's logfmt, protobuf,
 * kubectl's YAML/JSON), so they cannot forge a log entry.
 */

/** PEER_TEXT_MAX_BYTES bounds a peer's message in UTF-8 bytes, the cut note included. */
export const PEER_TEXT_MAX_BYTES = 4096;

// C0 except \t and \n, DEL, C1, line/paragraph separators, bidi embeddings/overrides/isolates, and
// (with the u flag) surrogates that are not half of a pair.
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]/gu;

/** peerText returns `text` with unsafe characters replaced, cut to `maxBytes` of UTF-8 with a note saying so. */
export function peerText(text: string, maxBytes = PEER_TEXT_MAX_BYTES): string {
  // Every character is at least one byte: more than maxBytes of them never fit, so never look at more
  // (a 1 MiB message costs no more than a 4 KiB one).
  const head = text.length > maxBytes ? text.slice(0, maxBytes) : text;
  const clean = head.replace(UNSAFE, '\ufffd');
  if (head === text && utf8Length(clean) <= maxBytes) return clean;
  const note = ` … [cut: ${Buffer.byteLength(text)} bytes in all]`;
  const room = maxBytes - utf8Length(note);
  return room > 0 ? cutUtf8(clean, room) + note : cutUtf8(clean, maxBytes);
}

function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** cutUtf8 keeps the longest prefix of whole code points that fits in `maxBytes` of UTF-8. */
function cutUtf8(text: string, maxBytes: number): string {
  let bytes = 0;
  let end = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (bytes > maxBytes) break;
    end += ch.length;
  }
  return text.slice(0, end);
}
