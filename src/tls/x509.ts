// The one entry point to @peculiar/x509: import it from here, never directly.
// The library resolves its algorithms through tsyringe, which needs a Reflect
// metadata polyfill loaded before it (ES modules evaluate imports in order).
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto);

export { x509 };
