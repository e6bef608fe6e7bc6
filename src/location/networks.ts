import type { Config, ConfigProblem } from '../config/load.js';
import { lookupRegion } from './catalog.js';
import { isIsoAlpha2 } from './iso3166.js';
import { canonicalPrefix, PrefixTable } from './prefix-table.js';
import type { Signal } from './signals.js';

/**
 * Site networks: address ranges the operator knows (their own data centres,
 * VPCs, on-premises storage), from the `networks` config key:
 *
 *   networks:
 *     "10.20.0.0/16": US
 *     "10.30.0.0/16": { jurisdiction: IE, region: eu-west-1 }
 *
 * A match is authoritative: the locator lets it stand alone, because the
 * operator knows their own sites better than any registry or GeoIP vendor.
 */
export type SiteSpec = string | { readonly jurisdiction: string; readonly region?: string };

export interface SiteNetwork {
  /** The configured prefix, canonical ('10.20.0.0/16'). */
  readonly prefix: string;
  /** One `network:site` signal, value = the prefix; built once at load. */
  readonly signals: readonly Signal[];
}

export class SiteNetworks {
  private constructor(private readonly table: PrefixTable<SiteNetwork>) {}

  /** Compile the config key. Throws on a CIDR, code or region the config checks would have refused. */
  static fromConfig(networks: Readonly<Record<string, SiteSpec>> | undefined): SiteNetworks {
    const problems = siteProblems(networks ?? {});
    if (problems.length > 0) throw new Error(`networks: ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`);
    const table = new PrefixTable<SiteNetwork>();
    for (const [cidr, spec] of Object.entries(networks ?? {})) {
      const jurisdiction = typeof spec === 'string' ? spec : spec.jurisdiction;
      const region = typeof spec === 'string' ? undefined : spec.region !== undefined ? lookupRegion(spec.region)!.id : undefined;
      const prefix = canonicalPrefix(cidr)!;
      const signal: Signal = Object.freeze({ source: 'network:site', value: prefix, jurisdiction, ...(region === undefined ? {} : { region }) });
      table.add(cidr, Object.freeze({ prefix, signals: Object.freeze([signal]) }));
    }
    return new SiteNetworks(table);
  }

  get size(): number {
    return this.table.size;
  }

  /** The most specific site network containing the address. */
  lookup(address: string): SiteNetwork | undefined {
    return this.table.lookup(address);
  }
}

/**
 * Config check for `networks` values beyond what the schema and
 * `locationProblems` check: a region must be in the catalog and agree with
 * the jurisdiction given beside it.
 */
export function siteNetworkProblems(config: Config): ConfigProblem[] {
  return siteProblems(config.networks ?? {}).filter((p) => p.kind === 'region').map(({ path, message, expected }) => ({ path, message, expected }));
}

function siteProblems(networks: Readonly<Record<string, SiteSpec>>): (ConfigProblem & { expected: string; kind: 'cidr' | 'code' | 'region' })[] {
  const problems: (ConfigProblem & { expected: string; kind: 'cidr' | 'code' | 'region' })[] = [];
  for (const [cidr, spec] of Object.entries(networks)) {
    const at = `networks[${JSON.stringify(cidr)}]`;
    if (canonicalPrefix(cidr) === null) {
      problems.push({ kind: 'cidr', path: at, message: 'is not a CIDR', expected: 'an address/prefix such as 10.20.0.0/16 or fd00::/8' });
    }
    const jurisdiction = typeof spec === 'string' ? spec : spec.jurisdiction;
    if (!isIsoAlpha2(jurisdiction)) {
      problems.push({ kind: 'code', path: typeof spec === 'string' ? at : `${at}.jurisdiction`, message: `"${jurisdiction}" is not an ISO 3166-1 alpha-2 code`, expected: 'a two-letter country code such as US, DE, IE' });
    }
    if (typeof spec !== 'string' && spec.region !== undefined) {
      const region = lookupRegion(spec.region);
      if (!region) {
        problems.push({ kind: 'region', path: `${at}.region`, message: `unknown region "${spec.region}"`, expected: 'a cloud region id such as us-east-1, europe-west3 or eastus' });
      } else if (typeof jurisdiction === 'string' && !region.jurisdictions.includes(jurisdiction)) {
        problems.push({ kind: 'region', path: `${at}.jurisdiction`, message: `"${jurisdiction}" contradicts region ${region.id} (${region.jurisdictions.join(', ')})`, expected: 'a jurisdiction of that region' });
      }
    }
  }
  return problems;
}
