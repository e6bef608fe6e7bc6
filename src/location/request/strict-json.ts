/**
 * Google's JSON APIs read keys in camelCase and snake_case alike, and a
 * reader that keeps the last of two equal keys could see what we did not:
 * bodies that decide a location are read key by key ignoring case and
 * underscores, and refused when a key appears twice.
 */

/** The value of a key, matched ignoring case and underscores (duplicates already refused). */
export function field(obj: Record<string, unknown>, normalized: string): unknown {
  for (const k of Object.keys(obj)) if (normalizeKey(k) === normalized) return obj[k];
  return undefined;
}

function normalizeKey(k: string): string {
  return k.toLowerCase().replaceAll('_', '');
}

/** Location bodies are a few levels deep; a deeper one is refused rather than walked. */
const MAX_DEPTH = 32;

/**
 * What makes a (valid) JSON text unfit to decide on: a key (normalised) that
 * appears twice in one object, or nesting deeper than any location body
 * has. Null when it is fit.
 */
export function jsonKeyProblem(text: string): string | null {
  const stack: { keys: Set<string> | null; expectKey: boolean }[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top !== undefined && top.keys !== null && top.expectKey) {
        const key = normalizeKey(JSON.parse(text.slice(i, j + 1)) as string);
        if (top.keys.has(key)) return `the key ${JSON.stringify(key)} appears more than once`;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= MAX_DEPTH) return 'the JSON is nested too deeply';
      stack.push(c === 0x7b ? { keys: new Set(), expectKey: true } : { keys: null, expectKey: false });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top !== undefined && top.keys !== null) top.expectKey = true;
    }
  }
  return null;
}
