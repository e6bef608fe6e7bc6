import { describe, expect, it } from 'vitest';
import { createdUploadId } from '../../src/location/request/uploads.js';

const NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"';
/** An InitiateMultipartUploadResult as S3 answers it, with `inner` after Bucket and Key. */
const answer = (inner: string, root = 'InitiateMultipartUploadResult', attrs = NS) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<${root} ${attrs}><Bucket>bkt</Bucket><Key>k/obj.bin</Key>${inner}</${root}>`;

describe('createdUploadId (CreateMultipartUpload answers)', () => {
  it('reads a plain UploadId, surrounding whitespace trimmed', () => {
    const id = 'VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA';
    expect(createdUploadId(answer(`<UploadId>${id}</UploadId>`))).toBe(id);
    expect(createdUploadId(answer(`<UploadId>\n  ${id}\n</UploadId>`))).toBe(id);
    // No declaration, no namespace, as S3-compatible stores may answer.
    expect(createdUploadId(`<InitiateMultipartUploadResult><UploadId>up-1</UploadId></InitiateMultipartUploadResult>`)).toBe('up-1');
  });

  it('decodes the predefined entities and character references', () => {
    expect(createdUploadId(answer('<UploadId>a&amp;b&lt;c&gt;d&quot;e&apos;f</UploadId>'))).toBe(`a&b<c>d"e'f`);
    expect(createdUploadId(answer('<UploadId>x&#43;y&#x2F;z</UploadId>'))).toBe('x+y/z');
  });

  it('refuses what it does not decode: other entities, DTDs, CDATA', () => {
    expect(createdUploadId(answer('<UploadId>&unknown;</UploadId>'))).toBeNull();
    expect(createdUploadId(`<!DOCTYPE r [<!ENTITY e "id">]>${answer('<UploadId>&e;</UploadId>')}`)).toBeNull();
    expect(createdUploadId(answer('<UploadId><![CDATA[up-1]]></UploadId>'))).toBeNull();
  });

  it('drops namespace prefixes, on the root and on the UploadId', () => {
    const prefixed = `<s3:InitiateMultipartUploadResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Bucket>bkt</s3:Bucket><s3:UploadId>up-2</s3:UploadId></s3:InitiateMultipartUploadResult>`;
    expect(createdUploadId(prefixed)).toBe('up-2');
    expect(createdUploadId(answer('<x:UploadId xmlns:x="urn:other">up-3</x:UploadId>'))).toBe('up-3');
  });

  it('a missing UploadId is no upload id', () => {
    expect(createdUploadId(answer(''))).toBeNull();
    expect(createdUploadId(answer('<UploadId></UploadId>'))).toBeNull();
    expect(createdUploadId(answer('<UploadId>   </UploadId>'))).toBeNull();
    expect(createdUploadId(answer('<UploadId/>'))).toBeNull();
  });

  it('a duplicated UploadId is no upload id (which one the client reads is a guess)', () => {
    expect(createdUploadId(answer('<UploadId>up-1</UploadId><UploadId>up-2</UploadId>'))).toBeNull();
    expect(createdUploadId(answer('<UploadId>up-1</UploadId><s3:UploadId xmlns:s3="urn:s3">up-1</s3:UploadId>'))).toBeNull();
  });

  it('only the result document counts, and only its own UploadId', () => {
    // An error document, or any other root, names no new upload.
    expect(createdUploadId('<Error><Code>InternalError</Code><UploadId>up-1</UploadId></Error>')).toBeNull();
    // Nested deeper than the result's own children: not the result's UploadId.
    expect(createdUploadId(answer('<Owner><UploadId>up-1</UploadId></Owner>'))).toBeNull();
    // Elements inside the value: not a plain id.
    expect(createdUploadId(answer('<UploadId>up<b/>1</UploadId>'))).toBeNull();
  });

  it('malformed or truncated XML is no upload id', () => {
    expect(createdUploadId('')).toBeNull();
    expect(createdUploadId('not xml')).toBeNull();
    expect(createdUploadId(answer('<UploadId>up-1</UploadId>').slice(0, -10))).toBeNull();
    expect(createdUploadId(answer('<UploadId>up-1</Upload>'))).toBeNull();
  });

  it('an id longer than 1024 characters is not taken for one', () => {
    expect(createdUploadId(answer(`<UploadId>${'a'.repeat(1024)}</UploadId>`))).toBe('a'.repeat(1024));
    expect(createdUploadId(answer(`<UploadId>${'a'.repeat(1025)}</UploadId>`))).toBeNull();
  });
});
