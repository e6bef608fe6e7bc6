import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import tls from 'node:tls';
import { watchDirectory } from '../watch.js';

/**
 * HTTPS on the data plane (`listen.tls`): the certificates it serves, chosen
 * by the name the client asks for (SNI), reloaded when their files change
 * (cert-manager renews them in place, a Secret volume swaps a symlink).
 * HTTP/1.1 only, also through ALPN.
 */

export interface CertificateFiles {
  readonly cert_file: string;
  readonly key_file: string;
}

/** A certificate file that cannot be served: the config path, what is wrong, what was expected. */
export class TlsCertificateError extends Error {
  constructor(
    readonly path: string,
    readonly detail: string,
    readonly expected: string,
  ) {
    super(`${path}: ${detail} (expected ${expected})`);
    this.name = 'TlsCertificateError';
  }
}

interface Served {
  readonly certificate: X509Certificate;
  readonly context: tls.SecureContext;
  readonly pem: { cert: string; key: string };
}

/** What a TLS listener offers: HTTP/1.1 only (the proxy speaks nothing else). */
export const ALPN = ['http/1.1'];

/** Read and check every configured certificate (synchronous: start-up and reload). The key never appears in an error. */
export function loadServedCertificates(files: readonly CertificateFiles[], at = 'listen.tls.certificates', now = Date.now()): Served[] {
  return files.map((f, i) => loadServedCertificate(f, `${at}[${i}]`, now));
}

/**
 * Read and check one certificate and its key; `path` names it in errors
 * (`listen.tls.certificates[N]`). Apart from loadServedCertificates so that
 * check-config can report every bad certificate, not only the first.
 */
export function loadServedCertificate(f: CertificateFiles, path: string, now = Date.now()): Served {
  const read = (key: keyof CertificateFiles, what: string) => {
    try {
      return readFileSync(f[key], 'utf8');
    } catch (err) {
      throw new TlsCertificateError(`${path}.${key}`, `${f[key]}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, `a readable ${what} file`);
    }
  };
  const cert = read('cert_file', 'PEM certificate');
  const key = read('key_file', 'PEM private key');
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch {
    throw new TlsCertificateError(`${path}.cert_file`, `${f.cert_file} holds no PEM certificate`, 'a PEM certificate chain, the server certificate first');
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new TlsCertificateError(`${path}.key_file`, `${f.key_file} holds no readable private key`, 'an unencrypted PEM private key');
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new TlsCertificateError(`${path}.key_file`, `${f.key_file} is not the key of the certificate in ${f.cert_file}`, 'the private key of that certificate');
  }
  if (Date.parse(certificate.validTo) <= now) {
    throw new TlsCertificateError(`${path}.cert_file`, `the certificate in ${f.cert_file} expired on ${certificate.validTo}`, 'a certificate valid now');
  }
  return { certificate, context: tls.createSecureContext({ cert, key }), pem: { cert, key } };
}

export interface DataPlaneTlsEvents {
  reloaded(subjects: string[]): void;
  /** A reload failed: the certificates loaded before stay in use. */
  reloadFailed(err: Error): void;
}

export class DataPlaneTls {
  private served: Served[];
  private readonly watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | null = null;

  constructor(
    private readonly files: readonly CertificateFiles[],
    private readonly events: DataPlaneTlsEvents,
  ) {
    this.served = loadServedCertificates(files);
  }

  /** Options for tls.createServer: the first certificate by default, the one naming the SNI host otherwise. */
  serverOptions(): tls.TlsOptions {
    return {
      ...this.served[0]!.pem,
      ALPNProtocols: ALPN,
      SNICallback: (servername, done) => done(null, this.contextFor(servername)),
    };
  }

  private contextFor(servername: string): tls.SecureContext {
    // checkHost follows RFC 6125 (wildcards in the left-most label only).
    return (this.served.find((s) => s.certificate.checkHost(servername) !== undefined) ?? this.served[0]!).context;
  }

  /** Load the files again; on success `server` gets the new default and SNI picks from the new set. */
  reload(server: tls.Server): boolean {
    try {
      const next = loadServedCertificates(this.files);
      this.served = next;
      server.setSecureContext(next[0]!.pem);
      this.events.reloaded(next.map((s) => s.certificate.subject.replace(/\n/g, ', ')));
      return true;
    } catch (err) {
      this.events.reloadFailed(err as Error);
      return false;
    }
  }

  /** Reload when a file changes: watch their directories (renames and symlink swaps included). */
  watch(server: tls.Server): void {
    const dirs = new Set(this.files.flatMap((f) => [dirname(f.cert_file), dirname(f.key_file)]));
    for (const dir of dirs) {
      // An unwatchable directory: a restart picks up new files.
      const watcher = watchDirectory(dir, () => {
        // A renewal writes the certificate and the key one after the other: load once both are there.
        if (this.debounce) clearTimeout(this.debounce);
        this.debounce = setTimeout(() => {
          this.debounce = null;
          this.reload(server);
        }, 200);
        this.debounce.unref();
      });
      if (watcher !== null) this.watchers.push(watcher);
    }
  }

  close(): void {
    if (this.debounce) clearTimeout(this.debounce);
    for (const w of this.watchers) w.close();
  }
}
