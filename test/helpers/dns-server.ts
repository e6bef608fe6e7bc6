import dns2 from 'dns2';

/** RFC 1035 §4.1.1 response codes (dns2's typings do not list them). */
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;

/**
 * A real DNS server on loopback for tests (dns2, UDP, a random port): answers
 * A/AAAA from a zone the test edits while it runs, with TTLs the test
 * chooses, and records every query so tests can count them.
 */
export interface DnsRecordSet {
  A?: readonly string[];
  AAAA?: readonly string[];
  /** Seconds; default 60. */
  ttl?: number;
}

export interface DnsQueryLog {
  readonly name: string;
  readonly type: string;
  readonly at: number;
}

export interface TestDnsServer {
  /** For `setServers` / config `dns.servers`: '127.0.0.1:PORT'. */
  readonly address: string;
  readonly port: number;
  readonly queries: DnsQueryLog[];
  /** answer: from the zone; drop: never reply (client times out); servfail: SERVFAIL. */
  mode: 'answer' | 'drop' | 'servfail';
  set(name: string, records: DnsRecordSet): void;
  count(name?: string, type?: string): number;
  close(): Promise<void>;
}

const { Packet } = dns2;
const TYPE_NAMES: Record<number, string> = { [Packet.TYPE.A]: 'A', [Packet.TYPE.AAAA]: 'AAAA' };

export async function startDnsServer(zone: Record<string, DnsRecordSet> = {}): Promise<TestDnsServer> {
  const records = new Map<string, DnsRecordSet>(Object.entries(zone).map(([k, v]) => [normalize(k), v]));
  const queries: DnsQueryLog[] = [];
  const state = { mode: 'answer' as TestDnsServer['mode'] };

  const server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      const [question] = request.questions;
      if (!question) return;
      const name = normalize(question.name);
      const type = TYPE_NAMES[question.type] ?? String(question.type);
      queries.push({ name, type, at: Date.now() });
      if (state.mode === 'drop') return;
      const response = Packet.createResponseFromRequest(request);
      const set = records.get(name);
      if (state.mode === 'servfail') {
        response.header.rcode = RCODE_SERVFAIL;
      } else if (!set) {
        response.header.rcode = RCODE_NXDOMAIN;
      } else {
        const ttl = set.ttl ?? 60;
        const list = type === 'A' ? set.A : type === 'AAAA' ? set.AAAA : undefined;
        for (const address of list ?? []) {
          response.answers.push(Object.assign(new Packet.Resource(question.name, question.type, Packet.CLASS.IN, ttl), { address }));
        }
      }
      void send(response);
    },
  });
  server.on('requestError', () => {});
  const addresses = await server.listen({ udp: { port: 0, address: '127.0.0.1' } });
  const port = addresses.udp!.port;

  return {
    address: `127.0.0.1:${port}`,
    port,
    queries,
    get mode() {
      return state.mode;
    },
    set mode(m) {
      state.mode = m;
    },
    set(name, set) {
      records.set(normalize(name), set);
    },
    count(name, type) {
      return queries.filter((q) => (name === undefined || q.name === normalize(name)) && (type === undefined || q.type === type)).length;
    },
    async close() {
      await server.close();
    },
  };
}

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
