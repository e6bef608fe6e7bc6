// The one entry point to @peculiar/x509: use it through here, never directly.
// Loaded on first use: it costs ~120 ms of start-up, which check-config and
// explain pay only when a config enables the forward proxy. The library
// resolves its algorithms through tsyringe, which needs the Reflect metadata
// polyfill loaded before it.
import { webcrypto } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as X509 from '@peculiar/x509';

export type { X509 };

let library: typeof X509 | null = null;

export function x509(): typeof X509 {
  if (library === null) {
    const require = createRequire(import.meta.url);
    require('reflect-metadata');
    const loaded = require('@peculiar/x509') as typeof X509;
    loaded.cryptoProvider.set(webcrypto);
    library = loaded;
  }
  return library;
}
