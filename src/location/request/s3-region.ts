import { parseS3Host } from './s3-host.js';

/** Where an S3 response says a bucket lives: pure parsing, no I/O. */
export const REGION_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const MAX_ERROR_BODY = 16 * 1024;
const ERROR_CODE = /<Code>\s*([A-Za-z]{1,64})\s*<\/Code>/;
const ERROR_REGION = /<Region>\s*([A-Za-z0-9-]{1,64})\s*<\/Region>/;
const ERROR_ENDPOINT = /<Endpoint>\s*([A-Za-z0-9.:-]{1,300})\s*<\/Endpoint>/;
// Error codes whose body names the bucket's region.
const REGION_ERRORS: ReadonlySet<string> = new Set(['PermanentRedirect', 'TemporaryRedirect', 'AuthorizationHeaderMalformed', 'AuthorizationQueryParametersError']);

/**
 * The bucket's region as an S3 response tells it: the `x-amz-bucket-region`
 * header (any status), else for redirects and region errors the XML error
 * body's `<Region>` or `<Endpoint>`. Null when nothing says.
 */
export function regionFromRedirect(
  statusCode: number,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  bodyText: string | null,
): string | null {
  const h = headers['x-amz-bucket-region'];
  const header = (Array.isArray(h) ? h[0] : h)?.trim().toLowerCase();
  if (header !== undefined && REGION_ID.test(header)) return header;
  if (bodyText === null || !(statusCode === 301 || statusCode === 307 || statusCode === 400 || statusCode === 403)) return null;
  const text = bodyText.length > MAX_ERROR_BODY ? bodyText.slice(0, MAX_ERROR_BODY) : bodyText;
  const code = ERROR_CODE.exec(text)?.[1];
  if (code === undefined || !REGION_ERRORS.has(code)) return null;
  const region = ERROR_REGION.exec(text)?.[1]?.toLowerCase();
  if (region !== undefined && REGION_ID.test(region)) return region;
  const endpoint = ERROR_ENDPOINT.exec(text)?.[1];
  if (endpoint !== undefined) {
    const info = parseS3Host(endpoint);
    if (info !== null && info.region !== null && !info.global) return info.region;
  }
  return null;
}
