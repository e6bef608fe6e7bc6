/*
 * A deliberately small XML reader, for the few small documents the proxy
 * reads itself (create-bucket and destination configurations, upload ids).
 *
 * Why hand-written rather than a library: the documents are tiny and fixed
 * (one element matters), and the one property that matters is what the
 * reader refuses. This one has no DTD support at all: any `<!` other than a
 * comment (DOCTYPE, ENTITY, CDATA) is an error, only the five predefined
 * entities and character references are decoded, and depth and element
 * count are bounded, so no input expands or recurses.
 */

/** An element as read: its name, child elements and text. */
export interface XmlElement {
  /** Local name (any namespace prefix dropped). */
  readonly name: string;
  readonly children: XmlElement[];
  /** Concatenated character data directly inside this element, entities decoded. */
  text: string;
}

export type XmlDocument = { readonly ok: true; readonly root: XmlElement } | { readonly ok: false; readonly error: string };

const XML_NAME = /[A-Za-z_][A-Za-z0-9._:-]*/y;
const XML_SPACE = /[ \t\r\n]*/y;
const MAX_DEPTH = 16;
const MAX_ELEMENTS = 512;
// A Map, not an object literal: '&constructor;' must not find Object.prototype.
const PREDEFINED: ReadonlyMap<string, string> = new Map([['lt', '<'], ['gt', '>'], ['amp', '&'], ['quot', '"'], ['apos', "'"]]);
const HEX_REF = /^#x[0-9a-fA-F]{1,6}$/;
const DEC_REF = /^#\d{1,7}$/;

/** `maxElements`: a create-bucket body has a handful; a replication configuration up to 1,000 rules. */
export function parseSafeXml(text: string, maxElements = MAX_ELEMENTS): XmlDocument {
  try {
    return parseXml(text, maxElements);
  } catch {
    return { ok: false, error: 'the XML could not be parsed' };
  }
}

function parseXml(text: string, maxElements: number): XmlDocument {
  const fail = (error: string): XmlDocument => ({ ok: false, error });
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  let elements = 0;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;

  const name = (): string | null => {
    XML_NAME.lastIndex = i;
    const m = XML_NAME.exec(text);
    if (m === null) return null;
    i = XML_NAME.lastIndex;
    return m[0];
  };
  const space = () => {
    XML_SPACE.lastIndex = i;
    XML_SPACE.exec(text);
    i = XML_SPACE.lastIndex;
  };

  while (i < text.length) {
    const lt = text.indexOf('<', i);
    const chars = lt === -1 ? text.slice(i) : text.slice(i, lt);
    if (chars.length > 0) {
      const top = stack[stack.length - 1];
      if (top === undefined) {
        if (chars.trim() !== '') return fail('text outside the root element');
      } else {
        const decoded = decodeEntities(chars);
        if (decoded === null) return fail('entity references other than the predefined ones are not accepted');
        top.text += decoded;
      }
    }
    if (lt === -1) break;
    i = lt;
    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i + 4);
      if (end === -1) return fail('unterminated comment');
      i = end + 3;
    } else if (text.startsWith('<!', i)) {
      return fail('DTDs, entity declarations and CDATA are not accepted');
    } else if (text.startsWith('<?', i)) {
      const end = text.indexOf('?>', i + 2);
      if (end === -1) return fail('unterminated processing instruction');
      i = end + 2;
    } else if (text.startsWith('</', i)) {
      i += 2;
      const n = name();
      if (n === null) return fail('malformed end tag');
      space();
      if (text.charCodeAt(i) !== 0x3e /* > */) return fail('malformed end tag');
      i++;
      const open = stack.pop();
      if (open === undefined || open.name !== localName(n)) return fail(`mismatched end tag ${n}`);
    } else {
      i++;
      const n = name();
      if (n === null) return fail('malformed start tag');
      if (stack.length === 0 && root !== null) return fail('more than one root element');
      if (stack.length >= MAX_DEPTH) return fail('elements nested too deeply');
      if (++elements > maxElements) return fail('too many elements');
      const el: XmlElement = { name: localName(n), children: [], text: '' };
      // Attributes are read for well-formedness only; none is used.
      for (;;) {
        space();
        if (text.startsWith('/>', i)) {
          i += 2;
          attach(el, false);
          break;
        }
        if (text.charCodeAt(i) === 0x3e /* > */) {
          i++;
          attach(el, true);
          break;
        }
        if (name() === null) return fail('malformed attribute');
        space();
        if (text.charCodeAt(i) !== 0x3d /* = */) return fail('malformed attribute');
        i++;
        space();
        const quote = text[i];
        if (quote !== '"' && quote !== "'") return fail('malformed attribute');
        const end = text.indexOf(quote, i + 1);
        if (end === -1) return fail('unterminated attribute');
        const value = text.slice(i + 1, end);
        if (value.includes('<') || decodeEntities(value) === null) return fail('malformed attribute value');
        i = end + 1;
      }
    }
  }
  if (stack.length > 0) return fail(`unclosed element ${stack[stack.length - 1]!.name}`);
  if (root === null) return fail('no root element');
  return { ok: true, root };

  function attach(el: XmlElement, open: boolean) {
    const parent = stack[stack.length - 1];
    if (parent === undefined) root = el;
    else parent.children.push(el);
    if (open) stack.push(el);
  }
}

function localName(qname: string): string {
  const colon = qname.lastIndexOf(':');
  return colon === -1 ? qname : qname.slice(colon + 1);
}

/** Decode the predefined entities and character references; null on anything else. */
function decodeEntities(s: string): string | null {
  if (!s.includes('&')) return s;
  let out = '';
  let i = 0;
  for (;;) {
    const amp = s.indexOf('&', i);
    if (amp === -1) return out + s.slice(i);
    out += s.slice(i, amp);
    const semi = s.indexOf(';', amp + 1);
    if (semi === -1 || semi - amp > 10) return null;
    const ref = s.slice(amp + 1, semi);
    if (ref.startsWith('#')) {
      const cp = HEX_REF.test(ref) ? parseInt(ref.slice(2), 16) : DEC_REF.test(ref) ? parseInt(ref.slice(1), 10) : NaN;
      if (!Number.isInteger(cp) || cp === 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return null;
      out += String.fromCodePoint(cp);
    } else {
      const v = PREDEFINED.get(ref);
      if (v === undefined) return null;
      out += v;
    }
    i = semi + 1;
  }
}
