/**
 * The query string as the storage service reads it. Services decode
 * parameter names before they look at them (`upload%49d` is `uploadId` to
 * S3, `X-Amz-Cred%65ntial` a presigned credential), so every part of the
 * planner must read decoded names. This produces, once per request, a query
 * string whose names are decoded and whose values are left as sent (callers
 * decode values where they need them), or says why the proxy cannot read it
 * the way the service would.
 */
export type PlanningQuery = { readonly ok: true; readonly query: string | null } | { readonly ok: false; readonly detail: string };

export function planningQuery(query: string | null, strict: boolean): PlanningQuery {
  // Nothing encoded and (strict) nothing that could repeat: the usual query costs no split.
  if (query === null || query === '' || (!query.includes('%') && (!strict || !query.includes('&')))) return { ok: true, query };
  const parts = query.split('&');
  let changed = false;
  const seen = strict ? new Set<string>() : null;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '') continue;
    const eq = part.indexOf('=');
    const rawName = eq === -1 ? part : part.slice(0, eq);
    let name = rawName;
    if (rawName.includes('%')) {
      try {
        name = decodeURIComponent(rawName);
      } catch {
        return { ok: false, detail: 'a query parameter name has a malformed percent-encoding' };
      }
      // A decoded '&' or '=' would split differently for us than for the service.
      if (name.includes('&') || name.includes('=')) return { ok: false, detail: 'a query parameter name decodes to a separator' };
      parts[i] = eq === -1 ? name : name + part.slice(eq);
      changed = true;
    }
    if (seen !== null) {
      // Which of two values a storage service acts on is not documented: refuse rather than guess.
      if (seen.has(name)) return { ok: false, detail: `the query parameter "${printable(name)}" appears more than once` };
      seen.add(name);
    }
  }
  return { ok: true, query: changed ? parts.join('&') : query };
}

function printable(name: string): string {
  const safe = name.replace(/[^\x20-\x7e]/g, '?');
  return safe.length > 64 ? safe.slice(0, 64) + '…' : safe;
}
