// What the server accepts from the page (text length, portrait size and types), so the page can warn before sending.
// The server stays the judge: the page only counts the way it does and words the warning. Pure (limits.test.ts).

/** The server's limit for Say/Chat text, in code points. */
export const MAX_TEXT_CHARS = 5000;
/** The server's limit for an uploaded portrait (CreateSession.portrait). */
export const MAX_PORTRAIT_BYTES = 8 * 1024 * 1024;
export const PORTRAIT_TYPES = ["image/jpeg", "image/png", "image/webp"];

export function charCount(text: string): number {
  // The server counts code points (Python len), not UTF-16 units.
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** The warning next to the input for `length` characters; "" within the limit. */
export function tooLongMessage(length: number): string {
  if (length <= MAX_TEXT_CHARS) return "";
  const limit = MAX_TEXT_CHARS.toLocaleString("en-US");
  return `Too long: ${length.toLocaleString("en-US")} characters; the limit is ${limit}.`;
}

/** Why a photo of `bytes` is not sent (too large); "" when it may go. */
export function portraitSizeRefusal(bytes: number): string {
  if (bytes <= MAX_PORTRAIT_BYTES) return "";
  return `That photo is ${(bytes / 2 ** 20).toFixed(1)} MiB; the limit is ${MAX_PORTRAIT_BYTES / 2 ** 20} MiB.`;
}
