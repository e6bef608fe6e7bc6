import type { Logger } from 'pino';

/**
 * The operational log as every part sees it: pino's level methods, called
 * `logger.warn(fields, msg)`. The composition root hands each part
 * `logger.child({ component: '<name>' })`, so every line of a part says which
 * part wrote it. Never pass fields that could carry credentials (a Redis URL
 * may hold a password).
 */
export type OperationalLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

const nothing = (): void => {};

/**
 * Writes nothing: the default of parts whose logger is optional (library use,
 * tests). Not a pino instance: commands that log nothing (explain, fleet) do
 * not load pino for it.
 */
export const silentLogger: OperationalLogger = { debug: nothing, info: nothing, warn: nothing, error: nothing };
