import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Compares two secrets in constant time whatever their lengths (digests have a fixed length). */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** Compares a secret with a stored sha256 digest in constant time. */
export function matchesDigest(secret: string, digest: Buffer): boolean {
  return timingSafeEqual(sha256(secret), digest);
}

/** `bytes` random bytes as base64url: 32 bytes give 43 characters. */
export function randomSecret(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}
