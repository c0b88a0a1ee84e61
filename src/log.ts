import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Paths pino censors in every log line, whatever the code that logs them: credentials can reach a
 * log only by a path not listed here, and the tests scan log output for seeded secrets.
 */
export const REDACT_PATHS = [
  'password', '*.password', 'token', '*.token', 'secret', '*.secret', 'clientSecret', '*.clientSecret',
  'introspectionClientSecret', '*.introspectionClientSecret', 'client_assertion', '*.client_assertion',
  'access_token', '*.access_token', 'refresh_token', '*.refresh_token',
  'adminToken', '*.adminToken', 'cacheKeySecret', '*.cacheKeySecret', 'mailBackendPassword', '*.mailBackendPassword',
  'authPass', '*.authPass',
  'req.headers.authorization', 'req.headers["proxy-authorization"]', 'req.headers["auth-pass"]', 'req.headers.cookie',
  'headers.authorization', 'headers["auth-pass"]',
];

export function createLogger(options: { level: string; pretty?: boolean; destination?: NodeJS.WritableStream }): Logger {
  const base: LoggerOptions = {
    level: options.level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'credgate' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (options.pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname,service' } } });
  }
  return options.destination ? pino(base, options.destination as DestinationStream) : pino(base);
}
