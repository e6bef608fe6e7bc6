/** Query-string parameters read without allocating a parsed object: requests are classified and located per request. */

/** True when the query string carries `name` (with or without a value). */
export function hasParam(query: string | null, name: string): boolean {
  return paramValue(query, name) !== undefined;
}

/** The raw value of the first `name` parameter; '' when present without a value; undefined when absent. */
export function paramValue(query: string | null, name: string): string | undefined {
  if (query === null || query === '') return undefined;
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end === -1) end = query.length;
    const eq = query.indexOf('=', start);
    const keyEnd = eq !== -1 && eq < end ? eq : end;
    if (keyEnd - start === name.length && query.startsWith(name, start)) {
      return keyEnd === end ? '' : query.slice(keyEnd + 1, end);
    }
    start = end + 1;
  }
  return undefined;
}
