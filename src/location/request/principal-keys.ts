import { readFileSync } from 'node:fs';
import { ACCESS_KEY_ID } from './sigv4.js';

/**
 * The secret access keys of the principals named in policy exceptions, so
 * their signatures can be verified. Given as a file or as an environment
 * variable's value, either a JSON object {"AKID": "secret", …} or lines
 * `ACCESS_KEY_ID SECRET_ACCESS_KEY` (blank lines and # comments ignored).
 *
 * Error messages name the source and the line but never quote the input:
 * any piece of it (even what looks like a key id, if columns were swapped)
 * may be a secret.
 */
export function loadPrincipalKeys(source: { file?: string; env?: string }, env: NodeJS.ProcessEnv = process.env): Map<string, string> {
  if (source.file !== undefined && source.env !== undefined) {
    throw new Error('principal keys: expected either a file or an environment variable, not both');
  }
  if (source.file !== undefined) {
    const where = `principal keys file ${source.file}`;
    let text: string;
    try {
      text = readFileSync(source.file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException | undefined)?.code ?? 'unreadable';
      throw new Error(`${where}: cannot be read (${code})`);
    }
    return parsePrincipalKeys(text, where);
  }
  if (source.env !== undefined) {
    const where = `principal keys environment variable ${source.env}`;
    const text = env[source.env];
    if (text === undefined) throw new Error(`${where}: is not set`);
    return parsePrincipalKeys(text, where);
  }
  return new Map();
}

const ID_EXPECTED = 'an access key id of 1 to 128 characters from A-Z a-z 0-9 _ . + = @ -';
const LINE_EXPECTED = "'ACCESS_KEY_ID SECRET_ACCESS_KEY' (two fields separated by spaces)";

function parsePrincipalKeys(raw: string, where: string): Map<string, string> {
  const text = raw.startsWith('\uFEFF') ? raw.slice(1) : raw;
  const keys = new Keys(where);
  if (text.trimStart().startsWith('{')) {
    parseJsonObject(text, keys);
  } else {
    text.split(/\r?\n/).forEach((line, index) => {
      const trimmed = line.trim();
      if (trimmed === '' || trimmed.startsWith('#')) return;
      const fields = trimmed.split(/[ \t]+/);
      if (fields.length !== 2) throw new Error(`${where} line ${index + 1}: expected ${LINE_EXPECTED}`);
      keys.add(fields[0]!, fields[1]!, index + 1);
    });
  }
  return keys.map;
}

/** Collects entries, refusing bad ids, empty secrets and repeats. */
class Keys {
  readonly map = new Map<string, string>();
  private readonly firstLine = new Map<string, number>();

  constructor(readonly where: string) {}

  add(id: string, secret: string, line: number): void {
    if (!ACCESS_KEY_ID.test(id)) throw new Error(`${this.where} line ${line}: expected ${ID_EXPECTED}`);
    if (secret === '') throw new Error(`${this.where} line ${line}: expected a non-empty secret access key`);
    const first = this.firstLine.get(id);
    if (first !== undefined) {
      throw new Error(`${this.where} line ${line}: duplicate access key id (first given on line ${first}); expected each id once`);
    }
    this.firstLine.set(id, line);
    this.map.set(id, secret);
  }
}

// JSON.parse keeps the last of repeated names silently and its error messages
// quote the input, so the flat object is read by hand (strings decoded by JSON.parse).
const JSON_STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const WHITESPACE = /[ \t\r\n]*/y;

function parseJsonObject(text: string, keys: Keys): void {
  let at = 0;
  const lineAt = (position: number): number => {
    let line = 1;
    for (let i = 0; i < position && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
    return line;
  };
  const problem = (expected: string): Error => new Error(`${keys.where} line ${lineAt(at)}: expected ${expected}`);
  const skipWhitespace = (): void => {
    WHITESPACE.lastIndex = at;
    WHITESPACE.exec(text);
    at = WHITESPACE.lastIndex;
  };
  const readString = (): string | null => {
    JSON_STRING.lastIndex = at;
    const m = JSON_STRING.exec(text);
    if (m === null) return null;
    at = JSON_STRING.lastIndex;
    return JSON.parse(m[0]) as string;
  };

  skipWhitespace();
  if (text[at] !== '{') throw problem("a JSON object '{'");
  at++;
  skipWhitespace();
  if (text[at] === '}') {
    at++;
  } else {
    for (;;) {
      skipWhitespace();
      const idLine = lineAt(at);
      const id = readString();
      if (id === null) throw problem('an access key id as a JSON string');
      skipWhitespace();
      if (text[at] !== ':') throw problem("':' after the access key id");
      at++;
      skipWhitespace();
      const secret = readString();
      if (secret === null) throw problem('the secret access key as a JSON string');
      keys.add(id, secret, idLine);
      skipWhitespace();
      if (text[at] === ',') {
        at++;
        continue;
      }
      if (text[at] === '}') {
        at++;
        break;
      }
      throw problem("',' or '}'");
    }
  }
  skipWhitespace();
  if (at !== text.length) throw problem('nothing after the closing }');
}
