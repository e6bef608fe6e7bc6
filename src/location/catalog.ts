// Built-in cloud region catalog.
//
// Maps a cloud provider's region id (as reported by S3 GetBucketLocation,
// Azure account metadata, GCS bucket metadata, ...) to the country or
// countries where data stored in that region physically rests, as ISO 3166-1
// alpha-2 codes. It is maintained by hand: add rows when a provider opens a
// region. Only regions known to exist are listed; an unknown id resolves to
// `undefined`, never to a guess.

import { isIsoAlpha2 } from './iso3166.js';

export type CloudProvider = 'aws' | 'gcp' | 'azure';

export interface RegionInfo {
  /** Canonical id as the provider spells it, lower case ('us-east-1', 'europe-west3', 'eastus', 'us'). */
  readonly id: string;
  readonly provider: CloudProvider;
  /** ISO 3166-1 alpha-2 codes; usually one, several for multi-region locations. */
  readonly jurisdictions: readonly string[];
  /** Human name, e.g. 'US East (N. Virginia)', 'Frankfurt', 'West Europe (Netherlands)'. */
  readonly description: string;
}

/** [id, country code or codes, description] */
export type RegionRow = readonly [id: string, where: string | readonly string[], description: string];

// ---------------------------------------------------------------------------
// AWS. Region ids and names follow the partition data AWS ships in its SDKs.
// eu-isoe-west-1 (aws-iso-e partition) is left out: its country is not public.
// ---------------------------------------------------------------------------
const AWS: readonly RegionRow[] = [
  ['us-east-1', 'US', 'US East (N. Virginia)'],
  ['us-east-2', 'US', 'US East (Ohio)'],
  ['us-west-1', 'US', 'US West (N. California)'],
  ['us-west-2', 'US', 'US West (Oregon)'],
  ['af-south-1', 'ZA', 'Africa (Cape Town)'],
  ['ap-east-1', 'HK', 'Asia Pacific (Hong Kong)'],
  ['ap-east-2', 'TW', 'Asia Pacific (Taipei)'],
  ['ap-south-1', 'IN', 'Asia Pacific (Mumbai)'],
  ['ap-south-2', 'IN', 'Asia Pacific (Hyderabad)'],
  ['ap-northeast-1', 'JP', 'Asia Pacific (Tokyo)'],
  ['ap-northeast-2', 'KR', 'Asia Pacific (Seoul)'],
  ['ap-northeast-3', 'JP', 'Asia Pacific (Osaka)'],
  ['ap-southeast-1', 'SG', 'Asia Pacific (Singapore)'],
  ['ap-southeast-2', 'AU', 'Asia Pacific (Sydney)'],
  ['ap-southeast-3', 'ID', 'Asia Pacific (Jakarta)'],
  ['ap-southeast-4', 'AU', 'Asia Pacific (Melbourne)'],
  ['ap-southeast-5', 'MY', 'Asia Pacific (Malaysia)'],
  ['ap-southeast-6', 'NZ', 'Asia Pacific (New Zealand)'],
  ['ap-southeast-7', 'TH', 'Asia Pacific (Thailand)'],
  ['ca-central-1', 'CA', 'Canada (Central)'],
  ['ca-west-1', 'CA', 'Canada West (Calgary)'],
  ['eu-central-1', 'DE', 'Europe (Frankfurt)'],
  ['eu-central-2', 'CH', 'Europe (Zurich)'],
  ['eu-west-1', 'IE', 'Europe (Ireland)'],
  ['eu-west-2', 'GB', 'Europe (London)'],
  ['eu-west-3', 'FR', 'Europe (Paris)'],
  ['eu-south-1', 'IT', 'Europe (Milan)'],
  ['eu-south-2', 'ES', 'Europe (Spain)'],
  ['eu-north-1', 'SE', 'Europe (Stockholm)'],
  ['il-central-1', 'IL', 'Israel (Tel Aviv)'],
  ['me-south-1', 'BH', 'Middle East (Bahrain)'],
  ['me-central-1', 'AE', 'Middle East (UAE)'],
  ['me-west-1', 'SA', 'Middle East (Saudi Arabia)'],
  ['mx-central-1', 'MX', 'Mexico (Central)'],
  ['sa-east-1', 'BR', 'South America (São Paulo)'],
  ['sa-west-1', 'CL', 'South America (Chile)'],
  // GovCloud
  ['us-gov-west-1', 'US', 'AWS GovCloud (US-West)'],
  ['us-gov-east-1', 'US', 'AWS GovCloud (US-East)'],
  // China (operated by local partners)
  ['cn-north-1', 'CN', 'China (Beijing)'],
  ['cn-northwest-1', 'CN', 'China (Ningxia)'],
  // European Sovereign Cloud
  ['eusc-de-east-1', 'DE', 'AWS European Sovereign Cloud (Brandenburg)'],
  // Isolated (secret / top secret) regions
  ['us-iso-east-1', 'US', 'US ISO East'],
  ['us-iso-west-1', 'US', 'US ISO West'],
  ['us-isob-east-1', 'US', 'US ISOB East (Ohio)'],
  ['us-isob-west-1', 'US', 'US ISOB West'],
  ['us-isof-east-1', 'US', 'US ISOF East'],
  ['us-isof-south-1', 'US', 'US ISOF South'],
];

// ---------------------------------------------------------------------------
// Google Cloud: regions, then Cloud Storage multi-regions and predefined
// dual-regions (GCS reports these upper case: 'US', 'EUR4').
// ---------------------------------------------------------------------------

// The 'eu' multi-region may place data in any EU member state, so it maps to
// all 27 of them (a superset of the countries Google runs EU data centres in:
// BE, DE, NL, FI, IE, IT, FR, PL, ES, SE).
const EU_MEMBER_STATES = [
  'AT', 'BE', 'BG', 'CY', 'CZ', 'DE', 'DK', 'EE', 'ES', 'FI', 'FR', 'GR', 'HR', 'HU',
  'IE', 'IT', 'LT', 'LU', 'LV', 'MT', 'NL', 'PL', 'PT', 'RO', 'SE', 'SI', 'SK',
] as const;

// The 'asia' multi-region spans Google's Asia-Pacific data centre countries;
// Google does not commit to which, so list every one it may use.
const GCS_ASIA = ['JP', 'KR', 'TW', 'HK', 'SG', 'IN', 'ID'] as const;

const GCP: readonly RegionRow[] = [
  ['us-central1', 'US', 'Council Bluffs, Iowa'],
  ['us-east1', 'US', 'Moncks Corner, South Carolina'],
  ['us-east4', 'US', 'Ashburn, Northern Virginia'],
  ['us-east5', 'US', 'Columbus, Ohio'],
  ['us-south1', 'US', 'Dallas, Texas'],
  ['us-west1', 'US', 'The Dalles, Oregon'],
  ['us-west2', 'US', 'Los Angeles, California'],
  ['us-west3', 'US', 'Salt Lake City, Utah'],
  ['us-west4', 'US', 'Las Vegas, Nevada'],
  ['northamerica-northeast1', 'CA', 'Montréal'],
  ['northamerica-northeast2', 'CA', 'Toronto'],
  ['northamerica-south1', 'MX', 'Querétaro'],
  ['southamerica-east1', 'BR', 'Osasco (São Paulo)'],
  ['southamerica-west1', 'CL', 'Santiago'],
  ['europe-west1', 'BE', 'St. Ghislain, Belgium'],
  ['europe-west2', 'GB', 'London'],
  ['europe-west3', 'DE', 'Frankfurt'],
  ['europe-west4', 'NL', 'Eemshaven, Netherlands'],
  ['europe-west6', 'CH', 'Zurich'],
  ['europe-west8', 'IT', 'Milan'],
  ['europe-west9', 'FR', 'Paris'],
  ['europe-west10', 'DE', 'Berlin'],
  ['europe-west12', 'IT', 'Turin'],
  ['europe-central2', 'PL', 'Warsaw'],
  ['europe-north1', 'FI', 'Hamina, Finland'],
  ['europe-north2', 'SE', 'Stockholm'],
  ['europe-southwest1', 'ES', 'Madrid'],
  ['me-central1', 'QA', 'Doha'],
  ['me-central2', 'SA', 'Dammam, Saudi Arabia'],
  ['me-west1', 'IL', 'Tel Aviv'],
  ['asia-east1', 'TW', 'Changhua County, Taiwan'],
  ['asia-east2', 'HK', 'Hong Kong'],
  ['asia-northeast1', 'JP', 'Tokyo'],
  ['asia-northeast2', 'JP', 'Osaka'],
  ['asia-northeast3', 'KR', 'Seoul'],
  ['asia-south1', 'IN', 'Mumbai'],
  ['asia-south2', 'IN', 'Delhi'],
  ['asia-southeast1', 'SG', 'Jurong West, Singapore'],
  ['asia-southeast2', 'ID', 'Jakarta'],
  ['asia-southeast3', 'TH', 'Bangkok'],
  ['australia-southeast1', 'AU', 'Sydney'],
  ['australia-southeast2', 'AU', 'Melbourne'],
  ['africa-south1', 'ZA', 'Johannesburg'],
  // Cloud Storage multi-regions
  ['us', 'US', 'United States (multi-region)'],
  ['eu', EU_MEMBER_STATES, 'European Union (multi-region)'],
  ['asia', GCS_ASIA, 'Asia Pacific (multi-region)'],
  // Cloud Storage predefined dual-regions (Google publishes only nam4 for North America)
  ['nam4', 'US', 'Iowa and South Carolina (us-central1 + us-east1)'],
  ['eur4', ['FI', 'NL'], 'Finland and Netherlands (europe-north1 + europe-west4)'],
  ['eur5', ['BE', 'GB'], 'Belgium and London (europe-west1 + europe-west2)'],
  ['eur7', ['GB', 'DE'], 'London and Frankfurt (europe-west2 + europe-west3)'],
  ['eur8', ['DE', 'CH'], 'Frankfurt and Zurich (europe-west3 + europe-west6)'],
  ['asia1', 'JP', 'Tokyo and Osaka (asia-northeast1 + asia-northeast2)'],
];

// ---------------------------------------------------------------------------
// Azure: programmatic region names (`az account list-locations`), public
// cloud, then the US Government and China (21Vianet) sovereign clouds.
// Retired regions (Germany Central/Northeast, US Gov Iowa) are not listed.
// ---------------------------------------------------------------------------
const AZURE: readonly RegionRow[] = [
  ['eastus', 'US', 'East US (Virginia)'],
  ['eastus2', 'US', 'East US 2 (Virginia)'],
  ['centralus', 'US', 'Central US (Iowa)'],
  ['northcentralus', 'US', 'North Central US (Illinois)'],
  ['southcentralus', 'US', 'South Central US (Texas)'],
  ['westcentralus', 'US', 'West Central US (Wyoming)'],
  ['westus', 'US', 'West US (California)'],
  ['westus2', 'US', 'West US 2 (Washington)'],
  ['westus3', 'US', 'West US 3 (Arizona)'],
  ['centraluseuap', 'US', 'Central US EUAP (Iowa)'],
  ['eastus2euap', 'US', 'East US 2 EUAP (Virginia)'],
  ['canadacentral', 'CA', 'Canada Central (Toronto)'],
  ['canadaeast', 'CA', 'Canada East (Quebec City)'],
  ['brazilsouth', 'BR', 'Brazil South (São Paulo State)'],
  ['brazilsoutheast', 'BR', 'Brazil Southeast (Rio de Janeiro)'],
  ['mexicocentral', 'MX', 'Mexico Central (Querétaro State)'],
  ['chilecentral', 'CL', 'Chile Central (Santiago)'],
  ['northeurope', 'IE', 'North Europe (Ireland)'],
  ['westeurope', 'NL', 'West Europe (Netherlands)'],
  ['uksouth', 'GB', 'UK South (London)'],
  ['ukwest', 'GB', 'UK West (Cardiff)'],
  ['francecentral', 'FR', 'France Central (Paris)'],
  ['francesouth', 'FR', 'France South (Marseille)'],
  ['germanywestcentral', 'DE', 'Germany West Central (Frankfurt)'],
  ['germanynorth', 'DE', 'Germany North (Berlin)'],
  ['switzerlandnorth', 'CH', 'Switzerland North (Zurich)'],
  ['switzerlandwest', 'CH', 'Switzerland West (Geneva)'],
  ['norwayeast', 'NO', 'Norway East (Oslo)'],
  ['norwaywest', 'NO', 'Norway West (Stavanger)'],
  ['swedencentral', 'SE', 'Sweden Central (Gävle)'],
  ['swedensouth', 'SE', 'Sweden South (Malmö)'],
  ['polandcentral', 'PL', 'Poland Central (Warsaw)'],
  ['italynorth', 'IT', 'Italy North (Milan)'],
  ['spaincentral', 'ES', 'Spain Central (Madrid)'],
  ['austriaeast', 'AT', 'Austria East (Vienna)'],
  ['belgiumcentral', 'BE', 'Belgium Central (Brussels)'],
  ['denmarkeast', 'DK', 'Denmark East (Copenhagen)'],
  ['eastasia', 'HK', 'East Asia (Hong Kong)'],
  ['southeastasia', 'SG', 'Southeast Asia (Singapore)'],
  ['japaneast', 'JP', 'Japan East (Tokyo, Saitama)'],
  ['japanwest', 'JP', 'Japan West (Osaka)'],
  ['koreacentral', 'KR', 'Korea Central (Seoul)'],
  ['koreasouth', 'KR', 'Korea South (Busan)'],
  ['centralindia', 'IN', 'Central India (Pune)'],
  ['southindia', 'IN', 'South India (Chennai)'],
  ['westindia', 'IN', 'West India (Mumbai)'],
  ['jioindiacentral', 'IN', 'Jio India Central (Nagpur)'],
  ['jioindiawest', 'IN', 'Jio India West (Jamnagar)'],
  ['australiaeast', 'AU', 'Australia East (New South Wales)'],
  ['australiasoutheast', 'AU', 'Australia Southeast (Victoria)'],
  ['australiacentral', 'AU', 'Australia Central (Canberra)'],
  ['australiacentral2', 'AU', 'Australia Central 2 (Canberra)'],
  ['newzealandnorth', 'NZ', 'New Zealand North (Auckland)'],
  ['indonesiacentral', 'ID', 'Indonesia Central (Jakarta)'],
  ['malaysiawest', 'MY', 'Malaysia West (Kuala Lumpur)'],
  ['uaenorth', 'AE', 'UAE North (Dubai)'],
  ['uaecentral', 'AE', 'UAE Central (Abu Dhabi)'],
  ['qatarcentral', 'QA', 'Qatar Central (Doha)'],
  ['israelcentral', 'IL', 'Israel Central'],
  ['southafricanorth', 'ZA', 'South Africa North (Johannesburg)'],
  ['southafricawest', 'ZA', 'South Africa West (Cape Town)'],
  // Azure Government
  ['usgovvirginia', 'US', 'US Gov Virginia'],
  ['usgovtexas', 'US', 'US Gov Texas'],
  ['usgovarizona', 'US', 'US Gov Arizona'],
  ['usdodeast', 'US', 'US DoD East (Virginia)'],
  ['usdodcentral', 'US', 'US DoD Central (Iowa)'],
  // Azure China (operated by 21Vianet)
  ['chinanorth', 'CN', 'China North (Beijing)'],
  ['chinanorth2', 'CN', 'China North 2 (Beijing)'],
  ['chinanorth3', 'CN', 'China North 3 (Hebei)'],
  ['chinaeast', 'CN', 'China East (Shanghai)'],
  ['chinaeast2', 'CN', 'China East 2 (Shanghai)'],
  ['chinaeast3', 'CN', 'China East 3 (Shanghai)'],
];

/**
 * Builds a region map from per-provider tables. Throws on a duplicate id (also
 * across providers), an id that is not lower case, or a jurisdiction that is
 * not an ISO 3166-1 alpha-2 code, so a bad row fails at module load.
 */
export function buildRegionMap(
  tables: Readonly<Partial<Record<CloudProvider, readonly RegionRow[]>>>,
): ReadonlyMap<string, RegionInfo> {
  const map = new Map<string, RegionInfo>();
  const define = (provider: CloudProvider, [id, where, description]: RegionRow): void => {
    if (id === '' || id !== id.toLowerCase()) {
      throw new Error(`region catalog: id '${id}' (${provider}) must be non-empty lower case`);
    }
    const existing = map.get(id);
    if (existing !== undefined) {
      throw new Error(`region catalog: duplicate id '${id}' (${existing.provider} and ${provider})`);
    }
    const jurisdictions = typeof where === 'string' ? [where] : [...where];
    if (jurisdictions.length === 0 || !jurisdictions.every(isIsoAlpha2)) {
      throw new Error(`region catalog: '${id}' (${provider}) has invalid jurisdictions [${jurisdictions.join(', ')}]`);
    }
    map.set(id, Object.freeze({ id, provider, jurisdictions: Object.freeze(jurisdictions), description }));
  };
  for (const provider of ['aws', 'gcp', 'azure'] as const) {
    for (const row of tables[provider] ?? []) define(provider, row);
  }
  return map;
}

export const REGIONS: ReadonlyMap<string, RegionInfo> = buildRegionMap({ aws: AWS, gcp: GCP, azure: AZURE });

/**
 * Looks up a region id, case-insensitively for ASCII letters ('EUROPE-WEST3',
 * 'US'). Nothing else is normalised: surrounding whitespace means no match.
 * Never throws.
 */
export function lookupRegion(id: string): RegionInfo | undefined {
  if (typeof id !== 'string') return undefined;
  return REGIONS.get(id.replace(/[A-Z]+/g, (s) => s.toLowerCase()));
}
