import { Readable } from 'node:stream';
import {
  CreateBucketMetadataTableConfigurationCommand,
  PutBucketAnalyticsConfigurationCommand,
  PutBucketInventoryConfigurationCommand,
  PutBucketLoggingCommand,
  PutBucketReplicationCommand,
  RestoreObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  GCS_BATCH_MAX_PARTS,
  S3_DESTINATION_REQUESTS,
  gcsComposeDestinations,
  gcsRelocateDestinations,
  parseGcsBatch,
  s3ConfigDestinations,
  type BatchReading,
  type BodyReading,
  type S3ConfigKind,
} from '../../src/location/request/destination-bodies.js';

const bytes = (s: string) => Buffer.from(s, 'utf8');
const NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"';
const XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n';
const s3 = (kind: S3ConfigKind, body: string) => s3ConfigDestinations(kind, bytes(body));
const found = (buckets: string[], places: string[] = []): BodyReading => ({ ok: true, destinations: { buckets, places } });

function expectUnreadable(reading: BodyReading | BatchReading, code: string, detail?: RegExp): void {
  expect(reading.ok).toBe(false);
  if (reading.ok) return;
  expect(reading.code).toBe(code);
  expect(reading.detail).toEqual(expect.any(String));
  if (detail) expect(reading.detail).toMatch(detail);
}
const unreadableS3 = (reading: BodyReading, detail?: RegExp) => expectUnreadable(reading, 'unreadable_destination', detail);

// ---------------------------------------------------------------------------
// Bodies shaped like the S3 API reference's examples
// ---------------------------------------------------------------------------

const REPLICATION = `${XML_DECL}<ReplicationConfiguration ${NS}>
  <Role>arn:aws:iam::123456789012:role/CrrRoleName</Role>
  <Rule>
    <ID>rule1</ID>
    <Status>Enabled</Status>
    <Priority>1</Priority>
    <DeleteMarkerReplication>
      <Status>Disabled</Status>
    </DeleteMarkerReplication>
    <Filter>
      <And>
        <Prefix>TaxDocs</Prefix>
        <Tag>
          <Key>TagA</Key>
          <Value>Value1</Value>
        </Tag>
      </And>
    </Filter>
    <Destination>
      <Bucket>arn:aws:s3:::exampletargetbucket</Bucket>
      <StorageClass>STANDARD</StorageClass>
    </Destination>
  </Rule>
  <Rule>
    <ID>rule2</ID>
    <Status>Disabled</Status>
    <Priority>2</Priority>
    <DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>
    <Filter><Prefix>archive/</Prefix></Filter>
    <SourceSelectionCriteria>
      <SseKmsEncryptedObjects><Status>Enabled</Status></SseKmsEncryptedObjects>
    </SourceSelectionCriteria>
    <Destination>
      <Bucket>arn:aws:s3:::second-target</Bucket>
      <Account>210987654321</Account>
      <AccessControlTranslation><Owner>Destination</Owner></AccessControlTranslation>
      <EncryptionConfiguration>
        <ReplicaKmsKeyID>arn:aws:kms:ap-southeast-2:210987654321:key/1234abcd-12ab-34cd-56ef-1234567890ab</ReplicaKmsKeyID>
      </EncryptionConfiguration>
      <ReplicationTime><Status>Enabled</Status><Time><Minutes>15</Minutes></Time></ReplicationTime>
      <Metrics><Status>Enabled</Status><EventThreshold><Minutes>15</Minutes></EventThreshold></Metrics>
    </Destination>
  </Rule>
</ReplicationConfiguration>`;

const INVENTORY = `${XML_DECL}<InventoryConfiguration ${NS}>
   <Id>report1</Id>
   <IsEnabled>true</IsEnabled>
   <Filter>
      <Prefix>filterPrefix</Prefix>
   </Filter>
   <Destination>
      <S3BucketDestination>
         <Format>CSV</Format>
         <AccountId>123456789012</AccountId>
         <Bucket>arn:aws:s3:::destination-bucket</Bucket>
         <Prefix>prefix1</Prefix>
         <Encryption>
            <SSE-KMS>
               <KeyId>arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab</KeyId>
            </SSE-KMS>
         </Encryption>
      </S3BucketDestination>
   </Destination>
   <Schedule>
      <Frequency>Daily</Frequency>
   </Schedule>
   <IncludedObjectVersions>All</IncludedObjectVersions>
   <OptionalFields>
      <Field>Size</Field>
      <Field>LastModifiedDate</Field>
      <Field>ETag</Field>
      <Field>StorageClass</Field>
      <Field>IsMultipartUploaded</Field>
      <Field>ReplicationStatus</Field>
      <Field>EncryptionStatus</Field>
      <Field>ObjectLockRetainUntilDate</Field>
      <Field>ObjectLockMode</Field>
      <Field>ObjectLockLegalHoldStatus</Field>
   </OptionalFields>
</InventoryConfiguration>`;

const LOGGING = `${XML_DECL}<BucketLoggingStatus xmlns="http://doc.s3.amazonaws.com/2006-03-01">
  <LoggingEnabled>
    <TargetBucket>mybucketlogs</TargetBucket>
    <TargetPrefix>mybucket-access_log-/</TargetPrefix>
    <TargetGrants>
      <Grant>
        <Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="AmazonCustomerByEmail">
          <EmailAddress>user@company.com</EmailAddress>
        </Grantee>
        <Permission>READ</Permission>
      </Grant>
    </TargetGrants>
    <TargetObjectKeyFormat>
      <PartitionedPrefix><PartitionDateSource>EventTime</PartitionDateSource></PartitionedPrefix>
    </TargetObjectKeyFormat>
  </LoggingEnabled>
</BucketLoggingStatus>`;

const ANALYTICS = `${XML_DECL}<AnalyticsConfiguration ${NS}>
  <Id>report1</Id>
  <Filter>
    <And>
      <Prefix>images/</Prefix>
      <Tag>
        <Key>dog</Key>
        <Value>corgi</Value>
      </Tag>
    </And>
  </Filter>
  <StorageClassAnalysis>
    <DataExport>
      <OutputSchemaVersion>V_1</OutputSchemaVersion>
      <Destination>
        <S3BucketDestination>
          <Format>CSV</Format>
          <BucketAccountId>123456789012</BucketAccountId>
          <Bucket>arn:aws:s3:::destination-bucket</Bucket>
          <Prefix>destination-prefix</Prefix>
        </S3BucketDestination>
      </Destination>
    </DataExport>
  </StorageClassAnalysis>
</AnalyticsConfiguration>`;

const METADATA_TABLE = `${XML_DECL}<MetadataTableConfiguration ${NS}>
  <S3TablesDestination>
    <TableBucketArn>arn:aws:s3tables:us-east-2:111122223333:bucket/amzn-s3-demo-table-bucket</TableBucketArn>
    <TableName>mytablename</TableName>
  </S3TablesDestination>
</MetadataTableConfiguration>`;

const RESTORE_SELECT = `${XML_DECL}<RestoreRequest ${NS}>
  <Type>SELECT</Type>
  <Tier>Expedited</Tier>
  <Description>Job description</Description>
  <SelectParameters>
    <Expression>select * from S3Object s where s._1 &gt; 10</Expression>
    <ExpressionType>SQL</ExpressionType>
    <InputSerialization>
      <CompressionType>GZIP</CompressionType>
      <CSV>
        <FileHeaderInfo>IGNORE</FileHeaderInfo>
        <RecordDelimiter>\n</RecordDelimiter>
        <FieldDelimiter>,</FieldDelimiter>
      </CSV>
    </InputSerialization>
    <OutputSerialization>
      <CSV>
        <QuoteFields>ASNEEDED</QuoteFields>
        <RecordDelimiter>\n</RecordDelimiter>
        <FieldDelimiter>,</FieldDelimiter>
      </CSV>
    </OutputSerialization>
  </SelectParameters>
  <OutputLocation>
    <S3>
      <BucketName>example-output-bucket</BucketName>
      <Prefix>outputlocation</Prefix>
      <Encryption><EncryptionType>AES256</EncryptionType></Encryption>
    </S3>
  </OutputLocation>
</RestoreRequest>`;

describe('s3ConfigDestinations: documented bodies', () => {
  it.each<[S3ConfigKind, string, BodyReading]>([
    // Both rules count, the Disabled one too.
    ['replication', REPLICATION, found(['exampletargetbucket', 'second-target'])],
    ['inventory', INVENTORY, found(['destination-bucket'])],
    ['logging', LOGGING, found(['mybucketlogs'])],
    ['analytics', ANALYTICS, found(['destination-bucket'])],
    ['metadataTable', METADATA_TABLE, found([], ['us-east-2'])],
    ['restore', RESTORE_SELECT, found(['example-output-bucket'])],
  ])('%s', (kind, body, expected) => {
    expect(s3(kind, body)).toEqual(expected);
  });

  it('configurations without a destination are read as naming none', () => {
    // Logging switched off.
    expect(s3('logging', `${XML_DECL}<BucketLoggingStatus xmlns="http://doc.s3.amazonaws.com/2006-03-01" />`)).toEqual(found([]));
    // Storage class analysis that exports nothing.
    expect(s3('analytics', `<AnalyticsConfiguration ${NS}><Id>a</Id><StorageClassAnalysis/></AnalyticsConfiguration>`)).toEqual(found([]));
    // A plain archive restore brings the object back in place.
    expect(s3('restore', `<RestoreRequest ${NS}><Days>2</Days><GlacierJobParameters><Tier>Standard</Tier></GlacierJobParameters></RestoreRequest>`)).toEqual(found([]));
  });

  it('names each bucket once, in order', () => {
    const rule = (b: string) => `<Rule><Status>Enabled</Status><Destination><Bucket>${b}</Bucket></Destination></Rule>`;
    const body = `<ReplicationConfiguration ${NS}><Role>r</Role>${rule('arn:aws:s3:::b')}${rule('arn:aws:s3:::a')}${rule('arn:aws:s3:::b')}</ReplicationConfiguration>`;
    expect(s3('replication', body)).toEqual(found(['b', 'a']));
  });

  it('lists which request carries each kind', () => {
    expect(S3_DESTINATION_REQUESTS.map((r) => `${r.method} ${r.on}?${r.subresource}`)).toEqual([
      'PUT bucket?replication',
      'PUT bucket?inventory',
      'PUT bucket?logging',
      'PUT bucket?analytics',
      'POST bucket?metadataTable',
      'POST object?restore',
    ]);
  });
});

// ---------------------------------------------------------------------------
// Bodies the AWS SDK itself sends (captured before they leave the client)
// ---------------------------------------------------------------------------

async function sdkBody(send: (client: S3Client) => Promise<unknown>): Promise<{ query: Record<string, unknown>; method: string; body: Uint8Array }> {
  let captured: { query: Record<string, unknown>; method: string; body: Uint8Array } | null = null;
  const client = new S3Client({
    region: 'eu-west-1',
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'not-a-secret' },
    maxAttempts: 1,
    requestHandler: {
      handle: async (request: { method: string; query: Record<string, unknown>; body: unknown }) => {
        const body = typeof request.body === 'string' ? bytes(request.body) : (request.body as Uint8Array);
        captured = { method: request.method, query: request.query, body };
        return { response: { statusCode: 200, headers: {}, body: Readable.from([]) } };
      },
    } as never,
  });
  await send(client);
  client.destroy();
  if (captured === null) throw new Error('the SDK sent nothing');
  return captured;
}

describe('s3ConfigDestinations: bodies from the AWS SDK', () => {
  const cases: [S3ConfigKind, (c: S3Client) => Promise<unknown>, BodyReading][] = [
    ['replication', (c) => c.send(new PutBucketReplicationCommand({
      Bucket: 'source',
      ReplicationConfiguration: {
        Role: 'arn:aws:iam::123456789012:role/replication',
        Rules: [
          { ID: 'live', Status: 'Enabled', Priority: 1, Filter: {}, DeleteMarkerReplication: { Status: 'Disabled' }, Destination: { Bucket: 'arn:aws:s3:::replica-eu' } },
          { ID: 'off', Status: 'Disabled', Priority: 2, Filter: { Prefix: 'x/' }, DeleteMarkerReplication: { Status: 'Disabled' }, Destination: { Bucket: 'arn:aws:s3:::replica-us', StorageClass: 'GLACIER' } },
        ],
      },
    })), found(['replica-eu', 'replica-us'])],
    ['inventory', (c) => c.send(new PutBucketInventoryConfigurationCommand({
      Bucket: 'source',
      Id: 'weekly',
      InventoryConfiguration: {
        Id: 'weekly',
        IsEnabled: true,
        IncludedObjectVersions: 'Current',
        Schedule: { Frequency: 'Weekly' },
        Destination: { S3BucketDestination: { Bucket: 'arn:aws:s3:::inventory-reports', Format: 'Parquet', AccountId: '123456789012' } },
      },
    })), found(['inventory-reports'])],
    ['logging', (c) => c.send(new PutBucketLoggingCommand({
      Bucket: 'source',
      BucketLoggingStatus: { LoggingEnabled: { TargetBucket: 'access-logs', TargetPrefix: 'source/' } },
    })), found(['access-logs'])],
    ['analytics', (c) => c.send(new PutBucketAnalyticsConfigurationCommand({
      Bucket: 'source',
      Id: 'a1',
      AnalyticsConfiguration: {
        Id: 'a1',
        StorageClassAnalysis: { DataExport: { OutputSchemaVersion: 'V_1', Destination: { S3BucketDestination: { Format: 'CSV', Bucket: 'arn:aws:s3:::analytics-out' } } } },
      },
    })), found(['analytics-out'])],
    ['metadataTable', (c) => c.send(new CreateBucketMetadataTableConfigurationCommand({
      Bucket: 'source',
      MetadataTableConfiguration: { S3TablesDestination: { TableBucketArn: 'arn:aws:s3tables:eu-west-1:123456789012:bucket/metadata', TableName: 'source_meta' } },
    })), found([], ['eu-west-1'])],
    ['restore', (c) => c.send(new RestoreObjectCommand({
      Bucket: 'source',
      Key: 'archive.csv',
      RestoreRequest: { OutputLocation: { S3: { BucketName: 'select-results', Prefix: 'out/' } } },
    })), found(['select-results'])],
  ];

  it.each(cases)('%s', async (kind, send, expected) => {
    const sent = await sdkBody(send);
    const request = S3_DESTINATION_REQUESTS.find((r) => r.kind === kind)!;
    expect(sent.method).toBe(request.method);
    expect(Object.keys(sent.query)).toContain(request.subresource);
    expect(s3ConfigDestinations(kind, sent.body)).toEqual(expected);
  });
});

// ---------------------------------------------------------------------------
// ARNs
// ---------------------------------------------------------------------------

const replicationTo = (bucket: string) =>
  `<ReplicationConfiguration ${NS}><Role>r</Role><Rule><Status>Enabled</Status><Destination><Bucket>${bucket}</Bucket></Destination></Rule></ReplicationConfiguration>`;
const inventoryTo = (bucket: string) =>
  `<InventoryConfiguration ${NS}><Destination><S3BucketDestination><Format>CSV</Format><Bucket>${bucket}</Bucket></S3BucketDestination></Destination></InventoryConfiguration>`;
const metadataTo = (arn: string) =>
  `<MetadataTableConfiguration ${NS}><S3TablesDestination><TableBucketArn>${arn}</TableBucketArn><TableName>t</TableName></S3TablesDestination></MetadataTableConfiguration>`;

describe('s3ConfigDestinations: large configurations', () => {
  it('reads every destination of a replication configuration with 1,000 rules (S3\'s limit)', () => {
    const rule = (i: number, bucket: string) =>
      `<Rule><ID>r${i}</ID><Priority>${i}</Priority><Status>Enabled</Status><Filter><Prefix>p${i}/</Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::${bucket}</Bucket><StorageClass>STANDARD</StorageClass></Destination></Rule>`;
    const rules = Array.from({ length: 1000 }, (_, i) => rule(i, i === 777 ? 'eu-archive' : 'us-replica'));
    const body = Buffer.from(`<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role>${rules.join('')}</ReplicationConfiguration>`);
    expect(body.length).toBeLessThan(1024 * 1024);
    expect(s3ConfigDestinations('replication', body)).toEqual({ ok: true, destinations: { buckets: ['us-replica', 'eu-archive'], places: [] } });
  });
});

describe('s3ConfigDestinations: ARNs', () => {
  it.each([
    ['arn:aws:s3:::plain', 'plain'],
    ['arn:aws-cn:s3:::china-bucket', 'china-bucket'],
    ['arn:aws-us-gov:s3:::gov-bucket', 'gov-bucket'],
    ['arn:aws-iso:s3:::iso-bucket', 'iso-bucket'],
    ['arn:aws-iso-b:s3:::isob-bucket', 'isob-bucket'],
    ['arn:aws-eusc:s3:::sovereign-bucket', 'sovereign-bucket'],
    ['arn:aws:s3:::Legacy_Bucket.Name', 'Legacy_Bucket.Name'],
    ['  arn:aws:s3:::padded  ', 'padded'],
  ])('bucket ARN %s', (arn, bucket) => {
    expect(s3('replication', replicationTo(arn))).toEqual(found([bucket]));
    expect(s3('inventory', inventoryTo(arn))).toEqual(found([bucket]));
  });

  it.each([
    ['arn:aws:s3:eu-central-1:123456789012:accesspoint/finance-ap', 'eu-central-1'],
    ['arn:aws-us-gov:s3:us-gov-west-1:123456789012:accesspoint/gov-ap', 'us-gov-west-1'],
    ['arn:aws-cn:s3:cn-northwest-1:123456789012:accesspoint/cn-ap', 'cn-northwest-1'],
  ])('access point ARN %s gives its Region', (arn, region) => {
    expect(s3('replication', replicationTo(arn))).toEqual(found([], [region]));
  });

  it.each([
    'exampletargetbucket', // a plain name where S3 wants an ARN
    'arn:aws:s3:::', // no bucket
    'arn:aws:s3:::bucket/key', // an object, not a bucket
    'arn:aws:s3::123456789012:accesspoint/mfzwi23gnjvgw.mrap', // Multi-Region Access Point: no single Region
    'arn:aws:s3:eu-west-1:123456789012:bucket', // a Region but no access point
    'arn:aws:s3:eu-west-1::accesspoint/ap', // no account
    'arn:aws:s3:EU-WEST-1:123456789012:accesspoint/ap', // not a Region id
    'arn:aws:s3-outposts:us-west-2:123456789012:outpost/op-01ac5d28a6a232904/bucket/b', // on premises
    'arn:aws:s3tables:eu-west-1:123456789012:bucket/tb', // a table bucket is not an S3 bucket
    'arn:aws:iam::123456789012:role/r',
    'arn:azure:s3:::bucket', // not an AWS partition
    'ARN:aws:s3:::bucket',
    'arn:aws:s3::bucket',
    'arn:aws:s3:::bad bucket',
    '',
  ])('refuses %j as a destination bucket', (arn) => {
    unreadableS3(s3('replication', replicationTo(arn)));
    unreadableS3(s3('inventory', inventoryTo(arn)));
  });

  it.each([
    'arn:aws:s3:::bucket',
    'arn:aws:s3tables:eu-west-1:123456789012:table/tb',
    'arn:aws:s3tables::123456789012:bucket/tb',
    'arn:aws:s3tables:eu-west-1:1234:bucket/tb',
    'arn:aws:s3tables:eu-west-1:123456789012:bucket/UPPER',
    'amzn-s3-demo-table-bucket',
  ])('refuses %j as a table bucket ARN', (arn) => {
    unreadableS3(s3('metadataTable', metadataTo(arn)));
  });

  it('gives the table bucket Region in every partition', () => {
    expect(s3('metadataTable', metadataTo('arn:aws-cn:s3tables:cn-north-1:123456789012:bucket/t_b-1'))).toEqual(found([], ['cn-north-1']));
  });

  it('refuses an ARN where a plain bucket name belongs', () => {
    const logging = (target: string) => `<BucketLoggingStatus><LoggingEnabled><TargetBucket>${target}</TargetBucket><TargetPrefix/></LoggingEnabled></BucketLoggingStatus>`;
    unreadableS3(s3('logging', logging('arn:aws:s3:::logs')));
    unreadableS3(s3('logging', logging('')));
    unreadableS3(s3('logging', logging('logs/prefix')));
  });
});

// ---------------------------------------------------------------------------
// Malformed and hostile S3 bodies
// ---------------------------------------------------------------------------

describe('s3ConfigDestinations: refusals', () => {
  it.each<[string, S3ConfigKind, string, RegExp?]>([
    ['an empty body', 'logging', '', /empty/],
    ['a blank body', 'replication', ' \r\n\t', /empty/],
    ['malformed XML', 'replication', `<ReplicationConfiguration><Rule></ReplicationConfiguration>`],
    ['text after the root', 'inventory', `${INVENTORY}trailing`],
    ['another root', 'replication', INVENTORY, /expected ReplicationConfiguration/],
    ['a lower-case root', 'logging', `<bucketLoggingStatus/>`],
    ['no rules', 'replication', `<ReplicationConfiguration ${NS}><Role>r</Role></ReplicationConfiguration>`, /Rule is missing/],
    [
      'a rule without a destination',
      'replication',
      `<ReplicationConfiguration ${NS}><Role>r</Role><Rule><Destination><Bucket>arn:aws:s3:::a</Bucket></Destination></Rule><Rule><Status>Enabled</Status></Rule></ReplicationConfiguration>`,
      /Destination is missing/,
    ],
    ['a destination without a bucket', 'replication', `<ReplicationConfiguration><Rule><Destination><StorageClass>STANDARD</StorageClass></Destination></Rule></ReplicationConfiguration>`, /Bucket is missing/],
    ['a differently cased element', 'replication', replicationTo('arn:aws:s3:::a').replace('<Bucket>arn:aws:s3:::a</Bucket>', '<Bucket>arn:aws:s3:::a</Bucket><bucket>arn:aws:s3:::b</bucket>'), /unexpected element bucket/],
    ['a cased-differently destination only', 'inventory', inventoryTo('x').replace(/<Bucket>x<\/Bucket>/, '<BUCKET>arn:aws:s3:::b</BUCKET>')],
    ['a bucket with child elements', 'replication', replicationTo('<Name>arn:aws:s3:::a</Name>'), /child elements/],
    ['an inventory without S3BucketDestination', 'inventory', `<InventoryConfiguration><Destination/></InventoryConfiguration>`],
    ['logging without a target bucket', 'logging', `<BucketLoggingStatus><LoggingEnabled><TargetPrefix>p</TargetPrefix></LoggingEnabled></BucketLoggingStatus>`],
    ['analytics without StorageClassAnalysis', 'analytics', `<AnalyticsConfiguration><Id>a</Id></AnalyticsConfiguration>`],
    ['an export without a destination', 'analytics', `<AnalyticsConfiguration><StorageClassAnalysis><DataExport><OutputSchemaVersion>V_1</OutputSchemaVersion></DataExport></StorageClassAnalysis></AnalyticsConfiguration>`],
    ['a metadata table without a destination', 'metadataTable', `<MetadataTableConfiguration ${NS}/>`],
    ['an output location without S3', 'restore', `<RestoreRequest><OutputLocation/></RestoreRequest>`],
    ['a DTD', 'logging', `<?xml version="1.0"?><!DOCTYPE BucketLoggingStatus [<!ENTITY t "evil-bucket">]><BucketLoggingStatus><LoggingEnabled><TargetBucket>&t;</TargetBucket></LoggingEnabled></BucketLoggingStatus>`, /DTD/],
    [
      'a billion laughs',
      'replication',
      `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><ReplicationConfiguration>&lol2;</ReplicationConfiguration>`,
    ],
    ['an external entity', 'inventory', `<!DOCTYPE x SYSTEM "http://127.0.0.1/x.dtd"><InventoryConfiguration/>`],
    ['an undeclared entity', 'logging', `<BucketLoggingStatus><LoggingEnabled><TargetBucket>&bucket;</TargetBucket></LoggingEnabled></BucketLoggingStatus>`],
    ['CDATA', 'logging', `<BucketLoggingStatus><LoggingEnabled><TargetBucket><![CDATA[logs]]></TargetBucket></LoggingEnabled></BucketLoggingStatus>`],
    ['deep nesting', 'replication', `<ReplicationConfiguration>${'<Rule>'.repeat(5000)}${'</Rule>'.repeat(5000)}</ReplicationConfiguration>`, /nested too deeply/],
    ['JSON', 'replication', `{"ReplicationConfiguration":{"Rules":[]}}`],
  ])('%s', (_name, kind, body, detail) => {
    unreadableS3(s3(kind, body), detail);
  });

  it('refuses invalid UTF-8', () => {
    const body = Buffer.concat([bytes(`<BucketLoggingStatus><LoggingEnabled><TargetBucket>logs`), Buffer.from([0xc3, 0x28]), bytes(`</TargetBucket></LoggingEnabled></BucketLoggingStatus>`)]);
    unreadableS3(s3ConfigDestinations('logging', body), /UTF-8/);
  });

  it('refuses an unknown kind, prototype names included', () => {
    for (const kind of ['notification', 'constructor', '__proto__', 'toString']) {
      unreadableS3(s3ConfigDestinations(kind as S3ConfigKind, bytes(LOGGING)), /unknown configuration kind/);
    }
  });

  it('reads aws-chunked bodies when told they are', () => {
    const xml = bytes(replicationTo('arn:aws:s3:::chunked-target'));
    const framed = Buffer.concat([bytes(`${xml.length.toString(16)};chunk-signature=${'0'.repeat(64)}\r\n`), xml, bytes(`\r\n0;chunk-signature=${'0'.repeat(64)}\r\n\r\n`)]);
    expect(s3ConfigDestinations('replication', framed, { awsChunked: true })).toEqual(found(['chunked-target']));
    unreadableS3(s3ConfigDestinations('replication', framed));
    unreadableS3(s3ConfigDestinations('replication', xml, { awsChunked: true }), /aws-chunked/);
  });

  it('reads a byte order mark and comments as XML does', () => {
    const body = `\uFEFF${XML_DECL}<!-- c --><BucketLoggingStatus><LoggingEnabled><TargetBucket>lo<!-- split -->gs</TargetBucket></LoggingEnabled></BucketLoggingStatus>`;
    expect(s3('logging', body)).toEqual(found(['logs']));
  });
});

// ---------------------------------------------------------------------------
// Cloud Storage: relocate and compose
// ---------------------------------------------------------------------------

const gcsRelocate = (body: string) => gcsRelocateDestinations(bytes(body));
const gcsCompose = (body: string) => gcsComposeDestinations(bytes(body));

describe('gcsRelocateDestinations', () => {
  it.each<[string, string[]]>([
    ['{"destinationLocation": "europe-west3"}', ['europe-west3']],
    ['{"destinationLocation": "EU", "validateOnly": true}', ['EU']],
    ['{"destinationLocation":"ASIA1","destinationCustomPlacementConfig":null}', ['ASIA1']],
    // A configurable dual-region: the location and both data locations.
    [
      JSON.stringify({ destinationLocation: 'US', destinationCustomPlacementConfig: { dataLocations: ['US-EAST1', 'US-WEST1'] }, validateOnly: false }, null, 2),
      ['US', 'US-EAST1', 'US-WEST1'],
    ],
    ['{"destinationLocation":"EU","destinationCustomPlacementConfig":{"dataLocations":["EUROPE-WEST1","EU"]}}', ['EU', 'EUROPE-WEST1']],
    // Google also accepts the proto field names.
    ['{"destination_location":"nam4","destination_custom_placement_config":{"data_locations":["US-CENTRAL1","US-EAST1"]}}', ['nam4', 'US-CENTRAL1', 'US-EAST1']],
    ['\uFEFF{"destinationLocation":"us-central1","destinationKmsKeyName":"projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"}', ['us-central1']],
  ])('%s', (body, places) => {
    expect(gcsRelocate(body)).toEqual(found([], places));
  });

  it.each<[string, string, RegExp?]>([
    ['no destinationLocation', '{"validateOnly":true}', /destinationLocation/],
    ['only a placement', '{"destinationCustomPlacementConfig":{"dataLocations":["US-EAST1","US-WEST1"]}}', /destinationLocation/],
    ['a null location', '{"destinationLocation":null}'],
    ['a numeric location', '{"destinationLocation":7}'],
    ['a location that is not an id', '{"destinationLocation":"eu west"}'],
    ['an empty location', '{"destinationLocation":""}'],
    ['a placement that is a list', '{"destinationLocation":"US","destinationCustomPlacementConfig":["US-EAST1"]}'],
    ['data locations that are a string', '{"destinationLocation":"US","destinationCustomPlacementConfig":{"dataLocations":"US-EAST1"}}'],
    ['empty data locations', '{"destinationLocation":"US","destinationCustomPlacementConfig":{"dataLocations":[]}}'],
    ['a non-string data location', '{"destinationLocation":"US","destinationCustomPlacementConfig":{"dataLocations":["US-EAST1",{"x":1}]}}'],
    ['a duplicate key', '{"destinationLocation":"EU","destinationLocation":"US"}', /more than once/],
    ['a duplicate in another case', '{"destinationLocation":"EU","DestinationLocation":"US"}', /more than once/],
    ['both spellings', '{"destinationLocation":"EU","destination_location":"US"}', /more than once/],
    ['a nested duplicate', '{"destinationLocation":"US","destinationCustomPlacementConfig":{"dataLocations":["US-EAST1"],"dataLocations":["ASIA-EAST1"]}}', /more than once/],
    ['an escaped duplicate', '{"destinationLocation":"EU","destinationLocatio\\u006e":"US"}', /more than once/],
    ['not JSON', 'destinationLocation=EU', /not JSON/],
    ['a list', '[{"destinationLocation":"EU"}]', /not a JSON object/],
    ['a string', '"EU"'],
    ['empty', ''],
    ['deep nesting', `{"destinationLocation":"EU","x":${'['.repeat(10000)}${']'.repeat(10000)}}`, /nested too deeply/],
    ['very deep nesting', `{"x":${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}}`],
  ])('refuses %s', (_name, body, detail) => {
    expectUnreadable(gcsRelocate(body), 'unreadable_destination', detail);
  });

  it('refuses invalid UTF-8', () => {
    expectUnreadable(gcsRelocateDestinations(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])), 'unreadable_destination', /UTF-8/);
  });
});

describe('gcsComposeDestinations', () => {
  const COMPOSE = {
    kind: 'storage#composeRequest',
    sourceObjects: [{ name: 'part-1' }, { name: 'part-2', generation: '1700000000000000', objectPreconditions: { ifGenerationMatch: '1700000000000000' } }],
    destination: { contentType: 'text/plain', bucket: 'other-bucket', metadata: { joined: 'yes' } },
  };

  it('names the destination bucket', () => {
    expect(gcsCompose(JSON.stringify(COMPOSE))).toEqual(found(['other-bucket']));
    expect(gcsCompose('{"sourceObjects":[{"name":"a"}],"destination":{"bucket":"logs.example.com"}}')).toEqual(found(['logs.example.com']));
  });

  it('names nothing when there is no destination bucket', () => {
    expect(gcsCompose('{"sourceObjects":[{"name":"a"},{"name":"b"}]}')).toEqual(found([]));
    expect(gcsCompose('{"sourceObjects":[{"name":"a"}],"destination":{"contentType":"text/plain"}}')).toEqual(found([]));
    expect(gcsCompose('{"sourceObjects":[{"name":"a"}],"destination":null}')).toEqual(found([]));
  });

  it.each<[string, string, RegExp?]>([
    ['a duplicate destination', '{"destination":{"bucket":"a"},"destination":{"bucket":"b"}}', /more than once/],
    ['a duplicate bucket', '{"destination":{"bucket":"a","bucket":"b"}}', /more than once/],
    ['a bucket in another case', '{"destination":{"bucket":"a","Bucket":"b"}}', /more than once/],
    ['a destination that is a list', '{"destination":[{"bucket":"a"}]}'],
    ['a destination that is a string', '{"destination":"gs://a/b"}'],
    ['a numeric bucket', '{"destination":{"bucket":42}}'],
    ['a bucket that is not a name', '{"destination":{"bucket":"Upper/Case"}}'],
    ['an empty bucket', '{"destination":{"bucket":""}}'],
    ['not JSON', '{"destination":'],
    ['empty', ''],
  ])('refuses %s', (_name, body, detail) => {
    expectUnreadable(gcsCompose(body), 'unreadable_destination', detail);
  });
});

// ---------------------------------------------------------------------------
// Cloud Storage JSON batch
// ---------------------------------------------------------------------------

// The batch how-to's example: CRLF, a quoted boundary, origin-form targets.
const DOC_BOUNDARY = '===============7330845974216740156==';
const DOC_BATCH = [
  `--${DOC_BOUNDARY}`,
  'Content-Type: application/http',
  'Content-Transfer-Encoding: binary',
  'Content-ID: <b29c5de2-0db4-490b-b421-6a51b598bd22+1>',
  '',
  'PATCH /storage/v1/b/example-bucket/o/obj1 HTTP/1.1',
  'Content-Type: application/json',
  'accept: application/json',
  'content-length: 31',
  '',
  '{"metadata": {"type": "tabby"}}',
  `--${DOC_BOUNDARY}`,
  'Content-Type: application/http',
  'Content-Transfer-Encoding: binary',
  'Content-ID: <b29c5de2-0db4-490b-b421-6a51b598bd22+2>',
  '',
  'PATCH /storage/v1/b/example-bucket/o/obj2 HTTP/1.1',
  'Content-Type: application/json',
  'accept: application/json',
  'content-length: 32',
  '',
  '{"metadata": {"type": "tuxedo"}}',
  `--${DOC_BOUNDARY}`,
  'Content-Type: application/http',
  'Content-Transfer-Encoding: binary',
  'Content-ID: <b29c5de2-0db4-490b-b421-6a51b598bd22+3>',
  '',
  'PATCH /storage/v1/b/example-bucket/o/obj3 HTTP/1.1',
  'Content-Type: application/json',
  'accept: application/json',
  'content-length: 32',
  '',
  '{"metadata": {"type": "calico"}}',
  `--${DOC_BOUNDARY}--`,
  '',
].join('\r\n');
const DOC_TYPE = `multipart/mixed; boundary="${DOC_BOUNDARY}"`;

/** The Python client's shape: MIME written with LF, each request with CRLF, absolute URLs. */
function pythonBatch(boundary: string, requests: { method: string; url: string; headers?: Record<string, string>; body?: string }[]): string {
  const parts = requests.map(({ method, url, headers = {}, body = '' }) => {
    const lines = [`${method} ${url} HTTP/1.1`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', body];
    return `--${boundary}\nContent-Type: application/http\nMIME-Version: 1.0\n\n${lines.join('\r\n')}`;
  });
  return `${parts.join('\n')}\n--${boundary}--\n`;
}

/** One minimal part per request, CRLF throughout. */
function batchOf(count: number, boundary = 'batch_b0undary'): string {
  const parts = Array.from({ length: count }, (_, i) => `--${boundary}\r\nContent-Type: application/http\r\n\r\nDELETE /storage/v1/b/b1/o/obj${i} HTTP/1.1\r\n\r\n`);
  return `${parts.join('\r\n')}\r\n--${boundary}--\r\n`;
}

const batch = (contentType: string | undefined, body: string, hosts?: string[]) => parseGcsBatch(contentType, bytes(body), hosts ? { extraHosts: hosts } : {});
const partsOf = (reading: BatchReading) => {
  if (!reading.ok) throw new Error(`unexpectedly unreadable: ${reading.detail}`);
  return reading.parts.map((p) => ({ method: p.method, target: p.target, headers: p.headers, body: Buffer.from(p.body).toString('utf8') }));
};
const unreadableBatch = (reading: BatchReading, detail?: RegExp) => expectUnreadable(reading, 'unreadable_batch', detail);

describe('parseGcsBatch: well-formed batches', () => {
  it("reads the documentation's example", () => {
    expect(partsOf(batch(DOC_TYPE, DOC_BATCH))).toEqual(
      [['obj1', 'tabby'], ['obj2', 'tuxedo'], ['obj3', 'calico']].map(([obj, type]) => ({
        method: 'PATCH',
        target: `/storage/v1/b/example-bucket/o/${obj}`,
        headers: { 'content-type': 'application/json', accept: 'application/json', 'content-length': String(`{"metadata": {"type": "${type}"}}`.length) },
        body: `{"metadata": {"type": "${type}"}}`,
      })),
    );
  });

  it("reads the Python client's batches (LF between parts, absolute URLs)", () => {
    const boundary = '===============2836410405913286781==';
    const rewrite = JSON.stringify({ destination: { bucket: 'dest-bucket' } });
    const body = pythonBatch(boundary, [
      { method: 'DELETE', url: 'https://storage.googleapis.com/storage/v1/b/src/o/old.txt?generation=1700000000000000' },
      { method: 'POST', url: 'https://storage.googleapis.com/storage/v1/b/src/o/a.txt/rewriteTo/b/dest-bucket/o/a.txt', headers: { 'Content-Length': String(rewrite.length), 'Content-Type': 'application/json' }, body: rewrite },
      { method: 'PATCH', url: 'https://www.googleapis.com/storage/v1/b/src/o/c.txt?projection=full', headers: { 'Content-Type': 'application/json' }, body: '{"contentType":"text/plain"}' },
    ]);
    expect(partsOf(batch(`multipart/mixed; boundary="${boundary}"`, body))).toEqual([
      { method: 'DELETE', target: '/storage/v1/b/src/o/old.txt?generation=1700000000000000', headers: {}, body: '' },
      { method: 'POST', target: '/storage/v1/b/src/o/a.txt/rewriteTo/b/dest-bucket/o/a.txt', headers: { 'content-length': String(rewrite.length), 'content-type': 'application/json' }, body: rewrite },
      { method: 'PATCH', target: '/storage/v1/b/src/o/c.txt?projection=full', headers: { 'content-type': 'application/json' }, body: '{"contentType":"text/plain"}' },
    ]);
  });

  it('reads an unquoted boundary, a preamble, an epilogue and transport padding', () => {
    const body = `This is a preamble; it is ignored.\r\n--abc123 \t\r\nContent-Type: application/http; msgtype=request\r\nContent-ID: <1>\r\n\r\nGET /storage/v1/b/b1/o?prefix=a%2F&alt=json HTTP/1.1\r\n\r\n\r\n--abc123--  \r\nAn epilogue, ignored too.\r\n`;
    expect(partsOf(batch('Multipart/Mixed;charset=utf-8;  BOUNDARY=abc123', body))).toEqual([{ method: 'GET', target: '/storage/v1/b/b1/o?prefix=a%2F&alt=json', headers: {}, body: '' }]);
  });

  it('reads requests with no version and no blank line (as in Google’s general batch example)', () => {
    const body = `--batch_foobarbaz\r\nContent-Type: application/http\r\nContent-ID: <item1:12930812@example.com>\r\n\r\nGET /storage/v1/b/b1/o/pony\r\n\r\n--batch_foobarbaz\r\nContent-Type: application/http\r\n\r\nGET /storage/v1/b/b1/o/sheep\r\n--batch_foobarbaz--`;
    expect(partsOf(batch('multipart/mixed; boundary=batch_foobarbaz', body))).toEqual([
      { method: 'GET', target: '/storage/v1/b/b1/o/pony', headers: {}, body: '' },
      { method: 'GET', target: '/storage/v1/b/b1/o/sheep', headers: {}, body: '' },
    ]);
  });

  it('reads LF-only batches', () => {
    const body = DOC_BATCH.replaceAll('\r\n', '\n');
    expect(partsOf(batch(DOC_TYPE, body)).map((p) => [p.target, p.body])).toEqual([
      ['/storage/v1/b/example-bucket/o/obj1', '{"metadata": {"type": "tabby"}}'],
      ['/storage/v1/b/example-bucket/o/obj2', '{"metadata": {"type": "tuxedo"}}'],
      ['/storage/v1/b/example-bucket/o/obj3', '{"metadata": {"type": "calico"}}'],
    ]);
  });

  it('keeps body bytes exactly, multi-byte characters included', () => {
    const json = '{"metadata":{"städte":"Zürich, 東京"}}';
    const body = `--b\r\nContent-Type: application/http\r\n\r\nPATCH /storage/v1/b/b1/o/x HTTP/1.1\r\ncontent-length: ${Buffer.byteLength(json)}\r\n\r\n${json}\r\n--b--`;
    const reading = batch('multipart/mixed; boundary=b', body);
    expect(reading.ok && Buffer.from(reading.parts[0]!.body).equals(bytes(json))).toBe(true);
  });

  it('accepts absolute targets on the extra hosts it is given (clients pointed at the proxy)', () => {
    const body = pythonBatch('b', [{ method: 'DELETE', url: 'https://residency.example.internal:8443/storage/v1/b/b1/o/x' }]);
    unreadableBatch(batch('multipart/mixed; boundary=b', body), /another host/);
    expect(partsOf(batch('multipart/mixed; boundary=b', body, ['Residency.Example.Internal:8443']))[0]!.target).toBe('/storage/v1/b/b1/o/x');
  });

  it('accepts the default port and any case in an absolute target', () => {
    const body = pythonBatch('b', [
      { method: 'DELETE', url: 'HTTPS://Storage.GoogleAPIs.com:443/storage/v1/b/b1/o/x' },
      { method: 'DELETE', url: 'http://www.googleapis.com:80/storage/v1/b/b1/o/y' },
    ]);
    expect(partsOf(batch('multipart/mixed; boundary=b', body)).map((p) => p.target)).toEqual(['/storage/v1/b/b1/o/x', '/storage/v1/b/b1/o/y']);
  });

  it('reads a boundary made of dashes', () => {
    expect(partsOf(batch('multipart/mixed; boundary="-"', batchOf(2, '-'))).length).toBe(2);
  });

  it(`reads ${GCS_BATCH_MAX_PARTS} parts and refuses ${GCS_BATCH_MAX_PARTS + 1}`, () => {
    const type = 'multipart/mixed; boundary=batch_b0undary';
    expect(partsOf(batch(type, batchOf(GCS_BATCH_MAX_PARTS))).length).toBe(GCS_BATCH_MAX_PARTS);
    unreadableBatch(batch(type, batchOf(GCS_BATCH_MAX_PARTS + 1)), /more than 100 parts/);
    unreadableBatch(batch(type, batchOf(5000)), /more than 100 parts/);
  });
});

describe('parseGcsBatch: refusals', () => {
  const part = (inner: string, mime = 'Content-Type: application/http') => `--b\r\n${mime}\r\n\r\n${inner}\r\n--b--\r\n`;
  const one = (inner: string, mime?: string) => batch('multipart/mixed; boundary=b', part(inner, mime));

  it.each<[string, string | undefined, RegExp]>([
    ['no Content-Type', undefined, /no Content-Type/],
    ['not multipart', 'application/json', /not multipart\/mixed/],
    ['multipart/related', 'multipart/related; boundary=b', /not multipart\/mixed/],
    ['no boundary', 'multipart/mixed', /no boundary/],
    ['an empty boundary', 'multipart/mixed; boundary=""', /not a valid boundary/],
    ['a boundary ending in a space', 'multipart/mixed; boundary="b "', /not a valid boundary/],
    ['a boundary over 70 characters', `multipart/mixed; boundary=${'x'.repeat(71)}`, /not a valid boundary/],
    ['a boundary with forbidden characters', 'multipart/mixed; boundary="a<b>"', /not a valid boundary/],
    ['two boundaries', 'multipart/mixed; boundary=b; boundary=c', /more than once/],
    ['an unterminated quote', 'multipart/mixed; boundary="b', /unterminated/],
    ['a parameter without a value', 'multipart/mixed; boundary', /no value/],
  ])('a Content-Type with %s', (_name, contentType, detail) => {
    unreadableBatch(batch(contentType, batchOf(1, 'b')), detail);
  });

  it.each<[string, string, RegExp]>([
    ['no parts', '--b--\r\n', /no parts/],
    ['no delimiter at all', 'GET /storage/v1/b/b1/o HTTP/1.1\r\n\r\n', /no closing boundary/],
    ['no closing boundary (a truncated body)', batchOf(2, 'b').slice(0, -9), /no closing boundary/],
    ['a part after the close', `${batchOf(1, 'b')}--b\r\nContent-Type: application/http\r\n\r\nDELETE /storage/v1/b/b1/o/x\r\n--b--\r\n`, /follows the closing boundary/],
    ['a line that goes on after the boundary', batchOf(1, 'b').replace('--b\r\n', '--bx\r\n--b\r\n'), /not a delimiter/],
    ['the boundary inside a line', part('PATCH /storage/v1/b/b1/o/x\r\n\r\n{"a":"--b"}'), /inside a line/],
    ['an empty part', '--b\r\n\r\n--b--\r\n', /not application\/http|no blank line/],
    ['a part without headers', '--b\r\n\r\nDELETE /storage/v1/b/b1/o/x\r\n--b--\r\n', /not application\/http/],
    ['a part without a blank line', '--b\r\nContent-Type: application/http\r\n--b--\r\n', /no blank line/],
    ['a text/plain part', part('DELETE /storage/v1/b/b1/o/x HTTP/1.1\r\n', 'Content-Type: text/plain'), /not application\/http/],
    ['a base64 part', part('REVMRVRFIC9zdG9yYWdlL3YxL2IvYjEvby94', 'Content-Type: application/http\r\nContent-Transfer-Encoding: base64'), /Content-Transfer-Encoding/],
    ['two Content-Types on a part', part('DELETE /storage/v1/b/b1/o/x', 'Content-Type: application/http\r\nContent-Type: text/plain'), /more than once/],
  ])('a body with %s', (_name, body, detail) => {
    unreadableBatch(batch('multipart/mixed; boundary=b', body), detail);
  });

  it.each<[string, string, RegExp]>([
    ['an absolute target on another host', 'DELETE https://evil.example.com/storage/v1/b/b1/o/x HTTP/1.1', /another host/],
    ['a look-alike host', 'DELETE https://storage.googleapis.com.evil.example/storage/v1/b/b1/o/x HTTP/1.1', /another host/],
    ['a non-default port', 'DELETE https://storage.googleapis.com:8443/storage/v1/b/b1/o/x HTTP/1.1', /another host/],
    ['credentials in the target', 'DELETE https://user@storage.googleapis.com/storage/v1/b/b1/o/x HTTP/1.1', /credentials/],
    ['an ftp target', 'DELETE ftp://storage.googleapis.com/storage/v1/b/b1/o/x HTTP/1.1', /malformed target/],
    ['an absolute target without a path', 'DELETE https://storage.googleapis.com HTTP/1.1', /malformed target/],
    ['a relative target', 'DELETE storage/v1/b/b1/o/x HTTP/1.1', /malformed target/],
    ['a network-path target', 'DELETE //evil.example.com/storage/v1/b/b1/o/x HTTP/1.1', /malformed target/],
    ['a fragment', 'DELETE /storage/v1/b/b1/o/x#frag HTTP/1.1', /fragment/],
    ['a lower-case method', 'delete /storage/v1/b/b1/o/x HTTP/1.1', /request line/],
    ['HTTP/2', 'DELETE /storage/v1/b/b1/o/x HTTP/2', /request line/],
    ['two spaces', 'DELETE  /storage/v1/b/b1/o/x HTTP/1.1', /request line/],
    ['a tab', 'DELETE\t/storage/v1/b/b1/o/x HTTP/1.1', /request line/],
    ['a non-ASCII target', 'DELETE /storage/v1/b/b1/o/\u00e9 HTTP/1.1', /request line/],
    ['a blank line first', '\r\nDELETE /storage/v1/b/b1/o/x HTTP/1.1', /request line/],
    ['nothing', '', /request line/],
    ['a bare CR in the request line', 'DELETE /storage/v1/b/b1/o/x\rHTTP/1.1', /bare CR/],
    ['a duplicate header', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nX-HTTP-Method-Override: DELETE\r\nx-http-method-override: GET\r\n\r\n{}', /more than once/],
    ['a folded header', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nContent-Type: application/json\r\n ; charset=utf-8\r\n\r\n{}', /folded/],
    ['a header without a colon', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nContent-Type application/json\r\n\r\n{}', /malformed header/],
    ['a space before the colon', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nContent-Type : application/json\r\n\r\n{}', /malformed header/],
    ['a control character in a header', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nX-A: a\u0000b\r\n\r\n{}', /malformed header/],
    ['a bare CR in a header', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nX-A: a\rX-B: b\r\n\r\n{}', /bare CR/],
    ['65 headers', `DELETE /storage/v1/b/b1/o/x HTTP/1.1\r\n${Array.from({ length: 65 }, (_, i) => `x-h${i}: v`).join('\r\n')}\r\n\r\n`, /too many headers/],
    ['a 9 KiB header line', `DELETE /storage/v1/b/b1/o/x HTTP/1.1\r\nx-big: ${'v'.repeat(9 * 1024)}\r\n\r\n`, /too long/],
    ['40 KiB of headers', `DELETE /storage/v1/b/b1/o/x HTTP/1.1\r\n${Array.from({ length: 60 }, (_, i) => `x-h${i}: ${'v'.repeat(700)}`).join('\r\n')}\r\n\r\n`, /too many header bytes/],
    ['a short Content-Length', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{"a":1}', /Content-Length/],
    ['a long Content-Length', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nContent-Length: 99\r\n\r\n{"a":1}', /Content-Length/],
    ['a signed Content-Length', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nContent-Length: +7\r\n\r\n{"a":1}', /Content-Length/],
    ['Transfer-Encoding', 'PATCH /storage/v1/b/b1/o/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"a":1}\r\n0\r\n\r\n', /Transfer-Encoding/],
  ])('an inner request with %s', (_name, inner, detail) => {
    unreadableBatch(one(inner), detail);
  });

  it('refuses invalid UTF-8', () => {
    const body = Buffer.concat([bytes('--b\r\nContent-Type: application/http\r\n\r\nPATCH /storage/v1/b/b1/o/x\r\n\r\n{"a":"'), Buffer.from([0xed, 0xa0, 0x80]), bytes('"}\r\n--b--\r\n')]);
    unreadableBatch(parseGcsBatch('multipart/mixed; boundary=b', body), /UTF-8/);
  });

  it('answers a large hostile body quickly', () => {
    const started = performance.now();
    unreadableBatch(batch('multipart/mixed; boundary=b', `--b\r\nContent-Type: application/http\r\n\r\nGET /x\r\n${'\n'.repeat(5_000_000)}`));
    unreadableBatch(batch('multipart/mixed; boundary=b', '--b'.repeat(1_000_000)));
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const KINDS: readonly S3ConfigKind[] = S3_DESTINATION_REQUESTS.map((r) => r.kind);

describe('properties', () => {
  const pieces = fc.constantFrom(
    '<', '>', '</', '/>', '<!--', '-->', '<?', '?>', '<!DOCTYPE', '<![CDATA[', '&', ';', '&#x', '&lt;', ' a="', '"', "'",
    'ReplicationConfiguration', 'Rule', 'Destination', 'Bucket', 'InventoryConfiguration', 'S3BucketDestination', 'BucketLoggingStatus',
    'LoggingEnabled', 'TargetBucket', 'MetadataTableConfiguration', 'S3TablesDestination', 'TableBucketArn', 'RestoreRequest', 'OutputLocation',
    'arn:', 'aws', ':s3:', ':::', 'accesspoint/', 's3tables', 'eu-west-1', '123456789012', 'bucket/',
    '{', '}', '[', ']', ':', ',', '"destinationLocation"', '"destination"', '"bucket"', '"dataLocations"', '\\', '\\u0000', 'null',
    '--b', '--b--', '\r\n', '\n', '\r', 'Content-Type: application/http', 'Content-Length: ', 'GET ', 'PATCH ', ' HTTP/1.1', '/storage/v1/b/x',
    'https://storage.googleapis.com', '\u0000', '\u00e9', '\uFEFF',
  );
  const structured = fc.array(pieces, { maxLength: 60 }).map((p) => bytes(p.join('')));
  const anyBytes = fc.oneof(structured, fc.uint8Array({ maxLength: 300 }), fc.string({ maxLength: 200 }).map(bytes));
  const contentTypes = fc.oneof(
    fc.constant(undefined),
    fc.constant('multipart/mixed; boundary=b'),
    fc.constant('multipart/mixed; boundary="--b"'),
    fc.string({ maxLength: 60 }).map((s) => `multipart/mixed; boundary=${s}`),
    fc.string({ maxLength: 60 }),
  );

  it('no bytes make any parser throw, and every answer is well formed', () => {
    fc.assert(
      fc.property(anyBytes, fc.constantFrom(...KINDS), fc.boolean(), contentTypes, (body, kind, awsChunked, contentType) => {
        for (const reading of [s3ConfigDestinations(kind, body, { awsChunked }), gcsRelocateDestinations(body), gcsComposeDestinations(body)]) {
          if (reading.ok) {
            expect(Array.isArray(reading.destinations.buckets) && Array.isArray(reading.destinations.places)).toBe(true);
          } else {
            expect(reading.code).toBe('unreadable_destination');
          }
        }
        const parsed = parseGcsBatch(contentType, body);
        if (!parsed.ok) expect(parsed.code).toBe('unreadable_batch');
        else expect(parsed.parts.length).toBeLessThanOrEqual(GCS_BATCH_MAX_PARTS);
      }),
      { numRuns: 2000 },
    );
  });

  it('a batch built from well-formed requests reads back as those requests', () => {
    const segment = fc.stringMatching(/^[a-z0-9._~%-]{1,12}$/);
    const request = fc.record({
      method: fc.constantFrom('GET', 'PATCH', 'POST', 'PUT', 'DELETE'),
      target: fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => `/storage/v1/b/${s.join('/')}`),
      headers: fc.dictionary(fc.stringMatching(/^x-[a-z0-9-]{1,10}$/), fc.stringMatching(/^[!-~]([ !-~]{0,20}[!-~])?$/), { maxKeys: 5 }),
      body: fc.json({ maxDepth: 3 }),
    });
    fc.assert(
      fc.property(fc.array(request, { minLength: 1, maxLength: 12 }), fc.constantFrom('\r\n', '\n'), (requests, eol) => {
        const boundary = 'gc0p4Jq0M2Yt08jU534c0p';
        const body = requests
          .map((r) => [`--${boundary}`, 'Content-Type: application/http', '', `${r.method} ${r.target} HTTP/1.1`, ...Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`), '', r.body].join(eol))
          .join(eol);
        const reading = batch(`multipart/mixed; boundary=${boundary}`, `${body}${eol}--${boundary}--${eol}`);
        expect(partsOf(reading)).toEqual(requests.map((r) => ({ method: r.method, target: r.target, headers: r.headers, body: r.body })));
      }),
      { numRuns: 300 },
    );
  });
});
