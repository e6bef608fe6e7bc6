import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CloudRanges, parseRangeFile, RangeFileError } from '../../src/location/ranges.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/ranges/${name}`, import.meta.url));
const AWS = fixture('aws-ip-ranges.json');
const GCP = fixture('gcp-cloud.json');
const AZURE = fixture('azure-service-tags.json');
const awsText = readFileSync(AWS, 'utf8');

/** Jurisdictions and places a lookup yields, compactly. */
function place(ranges: CloudRanges, address: string) {
  const r = ranges.lookup(address);
  if (!r) return undefined;
  return { prefix: r.prefix, places: r.places, jurisdictions: r.signals.map((s) => s.jurisdiction) };
}

function parseError(text: string, file = 'ip-ranges.json'): string {
  try {
    parseRangeFile(text, file);
  } catch (err) {
    expect(err).toBeInstanceOf(RangeFileError);
    return (err as Error).message;
  }
  throw new Error('expected a RangeFileError');
}

describe('cloud ranges', () => {
  it('loads all three native formats into one table', async () => {
    const ranges = await CloudRanges.load([AWS, GCP, AZURE]);
    // AWS
    expect(place(ranges, '3.5.64.10')).toEqual({ prefix: '3.5.64.0/21', places: ['aws:eu-west-1'], jurisdictions: ['IE'] });
    expect(place(ranges, '18.193.1.1')).toEqual({ prefix: '18.192.0.0/15', places: ['aws:eu-central-1'], jurisdictions: ['DE'] });
    expect(place(ranges, '2a05:d018:1::1')).toEqual({ prefix: '2a05:d018::/36', places: ['aws:eu-west-1'], jurisdictions: ['IE'] });
    expect(place(ranges, '2600:1f00::1')?.jurisdictions).toEqual(['US']);
    // Google
    expect(place(ranges, '35.198.70.1')).toEqual({ prefix: '35.198.64.0/18', places: ['gcp:europe-west3'], jurisdictions: ['DE'] });
    expect(place(ranges, '35.198.100.1')).toEqual({ prefix: '35.198.96.0/20', places: ['gcp:europe-west1'], jurisdictions: ['BE'] });
    expect(place(ranges, '34.1.210.1')?.jurisdictions).toEqual(['ZA']);
    expect(place(ranges, '2600:1901:8100::5')?.places).toEqual(['gcp:europe-west3']);
    // Azure: the global AzureCloud tag repeats regional prefixes; the region wins.
    expect(place(ranges, '13.69.1.1')).toEqual({ prefix: '13.69.0.0/17', places: ['azure:westeurope'], jurisdictions: ['NL'] });
    expect(place(ranges, '13.69.40.7')).toEqual({ prefix: '13.69.40.0/24', places: ['azure:westeurope'], jurisdictions: ['NL'] });
    expect(place(ranges, '20.50.1.1')?.jurisdictions).toEqual(['IE']);
    expect(place(ranges, '2603:1020:200::1')?.places).toEqual(['azure:westeurope']);
    // Outside every range.
    expect(ranges.lookup('8.8.8.8')).toBeUndefined();
    expect(ranges.lookup('2001:db8::1')).toBeUndefined();
  });

  it('signals name the source, the provider:region and the catalog region', async () => {
    const ranges = await CloudRanges.load([AWS]);
    expect(ranges.lookup('::ffff:3.5.64.1')?.signals).toEqual([{ source: 'network:cloud-range', value: 'aws:eu-west-1', jurisdiction: 'IE', region: 'eu-west-1' }]);
  });

  it('takes the longest prefix; global and unknown listings place nothing but still shadow', async () => {
    const ranges = await CloudRanges.load([AWS]);
    expect(place(ranges, '52.94.1.1')).toEqual({ prefix: '52.94.0.0/16', places: ['aws:eu-west-1'], jurisdictions: ['IE'] });
    // A GLOBAL /24 inside eu-west-1's /16: not eu-west-1.
    expect(place(ranges, '52.94.5.9')).toEqual({ prefix: '52.94.5.0/24', places: ['aws:GLOBAL'], jurisdictions: [null] });
    expect(place(ranges, '52.1.2.3')).toEqual({ prefix: '52.0.0.0/8', places: ['aws:GLOBAL'], jurisdictions: [null] });
    expect(place(ranges, '15.230.0.1')).toEqual({ prefix: '15.230.0.0/24', places: ['aws:xx-future-1'], jurisdictions: [null] });
    expect(place(ranges, '54.1.1.1')?.jurisdictions).toEqual(['US']);
    expect(place(ranges, '2600:9000::1')?.places).toEqual(['aws:GLOBAL']);
    const azure = await CloudRanges.load([AZURE]);
    expect(place(azure, '4.150.1.1')).toEqual({ prefix: '4.150.0.0/16', places: ['azure:global'], jurisdictions: [null] });
  });

  it('exposes each file’s version, date and counts', async () => {
    const ranges = await CloudRanges.load([AWS, GCP, { path: AZURE, format: 'azure' }]);
    expect(ranges.files).toEqual([
      {
        file: AWS, format: 'aws', provider: 'aws', version: '1705698786', created: '2024-01-19T21:13:06Z',
        prefixes: { ipv4: 4, ipv6: 2 }, skipped: { global: 3, unknownRegion: 1 }, unknownRegions: ['xx-future-1'],
      },
      {
        file: GCP, format: 'gcp', provider: 'gcp', version: '1705676400000', created: '2024-01-19T12:00:00.123Z',
        prefixes: { ipv4: 3, ipv6: 2 }, skipped: { global: 0, unknownRegion: 1 }, unknownRegions: ['nowhere-central9'],
      },
      {
        file: AZURE, format: 'azure', provider: 'azure', version: '301', created: null,
        prefixes: { ipv4: 3, ipv6: 1 }, skipped: { global: 4, unknownRegion: 0 }, unknownRegions: [],
      },
    ]);
    expect(ranges.size).toBe(10 + 6 + 5);
  });

  it('keeps every region when a prefix is listed in several, so the policy sees the conflict', () => {
    const a = parseRangeFile(JSON.stringify({ syncToken: '1', createDate: '2024-01-01-00-00-00', prefixes: [{ ip_prefix: '198.51.100.0/24', region: 'eu-west-1', service: 'AMAZON' }], ipv6_prefixes: [] }), 'a.json');
    const b = parseRangeFile(JSON.stringify({ syncToken: '2', createDate: '2024-01-01-00-00-00', prefixes: [{ ip_prefix: '198.51.100.0/24', region: 'us-east-1', service: 'AMAZON' }, { ip_prefix: '198.51.100.0/24', region: 'GLOBAL', service: 'ROUTE53' }], ipv6_prefixes: [] }), 'b.json');
    const ranges = CloudRanges.fromParsed([a, b]);
    expect(place(ranges, '198.51.100.1')).toEqual({ prefix: '198.51.100.0/24', places: ['aws:eu-west-1', 'aws:us-east-1'], jurisdictions: ['IE', 'US'] });
  });

  it('refuses a region id of another provider', () => {
    const gcp = parseRangeFile(JSON.stringify({ syncToken: '1', creationTime: '2024-01-01T00:00:00', prefixes: [{ ipv4Prefix: '192.0.2.0/24', scope: 'eu-west-1' }] }), 'cloud.json');
    expect(gcp.info.unknownRegions).toEqual(['eu-west-1']);
    expect(place(CloudRanges.fromParsed([gcp]), '192.0.2.1')?.jurisdictions).toEqual([null]);
  });

  describe('rejects malformed files with the file, the JSON path and what was expected', () => {
    const aws = () => JSON.parse(awsText) as Record<string, unknown> & { prefixes: Record<string, unknown>[] };

    it('missing prefixes', () => {
      const doc = aws();
      delete (doc as Record<string, unknown>).prefixes;
      expect(parseError(JSON.stringify(doc))).toBe('ip-ranges.json: prefixes: is missing (expected a list of prefix objects)');
    });

    it('a bad CIDR, naming its index', () => {
      const doc = aws();
      doc.prefixes[3]!.ip_prefix = '52.94.0.0/33';
      expect(parseError(JSON.stringify(doc))).toBe('ip-ranges.json: prefixes[3].ip_prefix: "52.94.0.0/33" is not a CIDR (expected an IPv4 prefix such as 52.94.0.0/16)');
    });

    it('an IPv6 prefix where IPv4 belongs', () => {
      const doc = aws();
      doc.prefixes[0]!.ip_prefix = '2600::/16';
      expect(parseError(JSON.stringify(doc))).toBe('ip-ranges.json: prefixes[0].ip_prefix: "2600::/16" is not an IPv4 prefix (expected an IPv4 prefix such as 52.94.0.0/16)');
    });

    it('wrong types, every problem at once', () => {
      const doc = aws();
      doc.syncToken = 1705698786;
      doc.prefixes[1]!.region = 7;
      doc.prefixes[2] = 'x' as never;
      (doc as Record<string, unknown>).ipv6_prefixes = {};
      expect(parseError(JSON.stringify(doc)).split('\n')).toEqual([
        'ip-ranges.json: syncToken: is a number (1705698786) (expected a string such as "1705698786")',
        'ip-ranges.json: prefixes[1].region: is a number (7) (expected a region id such as eu-west-1, or GLOBAL)',
        'ip-ranges.json: prefixes[2]: is a string ("x") (expected an object with ip_prefix and region)',
        'ip-ranges.json: ipv6_prefixes: is an object (expected a list of prefix objects)',
      ]);
    });

    it('a bad date', () => {
      const doc = aws();
      doc.createDate = '2024-01-19 21:13:06';
      expect(parseError(JSON.stringify(doc))).toMatch(/^ip-ranges\.json: createDate: "2024-01-19 21:13:06" is not a date \(expected YYYY-MM-DD-hh-mm-ss/);
    });

    it('Google: both or neither prefix, a missing scope', () => {
      const text = JSON.stringify({
        syncToken: '1',
        creationTime: '2024-01-01T00:00:00.000000',
        prefixes: [{ ipv4Prefix: '192.0.2.0/24', ipv6Prefix: '2001:db8::/32', scope: 'us-east1' }, { scope: 'us-east1' }, { ipv4Prefix: '192.0.2.0/24' }],
      });
      expect(parseError(text, 'cloud.json').split('\n')).toEqual([
        'cloud.json: prefixes[0]: has both ipv4Prefix and ipv6Prefix (expected exactly one of ipv4Prefix, ipv6Prefix)',
        'cloud.json: prefixes[1]: has neither ipv4Prefix nor ipv6Prefix (expected exactly one of ipv4Prefix, ipv6Prefix)',
        'cloud.json: prefixes[2].scope: is missing (expected a region id such as europe-west3)',
      ]);
    });

    it('Azure: properties and prefixes', () => {
      const text = JSON.stringify({
        changeNumber: '301',
        values: [{ name: 'A', properties: { region: 'westeurope', addressPrefixes: ['13.69.0.0/17', '13.69.0.0/99'] } }, { name: 'B' }, { name: 'C', properties: { region: 'westeurope', addressPrefixes: '1.2.3.0/24' } }],
      });
      expect(parseError(text, 'ServiceTags_Public.json').split('\n')).toEqual([
        'ServiceTags_Public.json: changeNumber: is a string ("301") (expected an integer)',
        'ServiceTags_Public.json: values[0].properties.addressPrefixes[1]: "13.69.0.0/99" is not a CIDR (expected an IPv4 or IPv6 prefix)',
        'ServiceTags_Public.json: values[1].properties: is missing (expected an object with region and addressPrefixes)',
        'ServiceTags_Public.json: values[2].properties.addressPrefixes: is a string ("1.2.3.0/24") (expected a list of prefixes)',
      ]);
    });

    it('not JSON, not an object, not a known format; caps the list', () => {
      expect(parseError('{"prefixes": [', 'x.json')).toMatch(/^x\.json: \(document\): is not valid JSON: /);
      expect(parseError('[]', 'x.json')).toBe('x.json: (document): is a list (expected a JSON object)');
      expect(parseError('{"prefixes": []}', 'x.json')).toMatch(/^x\.json: \(document\): is not a recognised cloud range file \(expected AWS ip-ranges\.json/);
      const doc = aws();
      doc.prefixes = Array.from({ length: 25 }, () => ({ ip_prefix: 'nope', region: 'eu-west-1' }));
      const lines = parseError(JSON.stringify(doc)).split('\n');
      expect(lines).toHaveLength(11);
      expect(lines[10]).toBe('ip-ranges.json: … and 15 more problems');
    });

    it('load() names the file on disk', async () => {
      await expect(CloudRanges.load([fixture('missing.json')])).rejects.toThrow(`${fixture('missing.json')}: (file): file not found (expected a readable JSON file)`);
      await expect(CloudRanges.load([{ path: AWS, format: 'azure' }])).rejects.toThrow(`${AWS}: changeNumber: is missing (expected an integer)`);
    });
  });
});
