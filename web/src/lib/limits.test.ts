// The page's limits: counting like the server, and the warnings. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { charCount, MAX_PORTRAIT_BYTES, MAX_TEXT_CHARS, portraitSizeRefusal, tooLongMessage } from "./limits";

test("text is counted in code points, as the server counts it", () => {
  assert.equal(charCount(""), 0);
  assert.equal(charCount("hello"), 5);
  assert.equal(charCount("😀😀"), 2); // four UTF-16 units
  assert.equal(charCount("e\u0301"), 2); // a combining accent is its own code point
});

test("the too-long warning names the count and the limit", () => {
  assert.equal(tooLongMessage(MAX_TEXT_CHARS), "");
  assert.equal(tooLongMessage(5001), "Too long: 5,001 characters; the limit is 5,000.");
});

test("a photo over the limit is refused before it is sent", () => {
  assert.equal(portraitSizeRefusal(MAX_PORTRAIT_BYTES), "");
  assert.equal(portraitSizeRefusal(9.5 * 2 ** 20), "That photo is 9.5 MiB; the limit is 8 MiB.");
});
