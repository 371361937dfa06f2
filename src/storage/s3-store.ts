import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { S3Config } from '../config.js';
import { FgsnError } from '../errors.js';
import { assertSafeKey } from './keys.js';
import type { BlobStore, ByteRange } from './types.js';

/** Files above this go up in parts (S3 caps single PUTs at 5 GB; parts also bound memory and retries). */
const MULTIPART_THRESHOLD = 64 * 1024 * 1024;
const PART_SIZE = 64 * 1024 * 1024;

/** S3-compatible object store. Single-object PUTs are atomic in S3, which publication relies on. */
export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  private readonly client: S3Client;

  private readonly multipartThreshold: number;
  private readonly partSize: number;

  constructor(
    private readonly cfg: S3Config,
    opts: { multipartThreshold?: number; partSize?: number } = {},
  ) {
    this.multipartThreshold = opts.multipartThreshold ?? MULTIPART_THRESHOLD;
    this.partSize = Math.max(5 * 1024 * 1024, opts.partSize ?? PART_SIZE);
    this.client = new S3Client({
      region: cfg.region,
      endpoint: cfg.endpoint,
      forcePathStyle: cfg.forcePathStyle,
      credentials:
        cfg.accessKeyId !== undefined && cfg.secretAccessKey !== undefined
          ? { accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey }
          : undefined,
      // Flexible checksums use aws-chunked trailers that many S3-compatible servers do not accept.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  private key(key: string): string {
    assertSafeKey(key);
    return this.cfg.prefix ? `${this.cfg.prefix.replace(/\/+$/, '')}/${key}` : key;
  }

  async putFile(key: string, filePath: string): Promise<void> {
    const size = (await stat(filePath)).size;
    const Key = this.key(key);
    try {
      if (size <= this.multipartThreshold) {
        await this.client.send(
          new PutObjectCommand({ Bucket: this.cfg.bucket, Key, Body: createReadStream(filePath), ContentLength: size }),
        );
        return;
      }
      await this.putMultipart(Key, filePath, size);
    } catch (e) {
      throw s3Error(`upload ${key}`, e);
    }
  }

  private async putMultipart(Key: string, filePath: string, size: number): Promise<void> {
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.cfg.bucket, Key }));
    try {
      const parts: { ETag?: string; PartNumber: number }[] = [];
      for (let start = 0, n = 1; start < size; start += this.partSize, n++) {
        const end = Math.min(size, start + this.partSize) - 1;
        const out = await this.client.send(
          new UploadPartCommand({
            Bucket: this.cfg.bucket,
            Key,
            UploadId,
            PartNumber: n,
            Body: createReadStream(filePath, { start, end }),
            ContentLength: end - start + 1,
          }),
        );
        parts.push({ ETag: out.ETag, PartNumber: n });
      }
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId, MultipartUpload: { Parts: parts } }),
      );
    } catch (e) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId })).catch(() => undefined);
      throw e;
    }
  }

  async putBytes(key: string, body: Buffer | string): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.cfg.bucket, Key: this.key(key), Body: body }));
    } catch (e) {
      throw s3Error(`write ${key}`, e);
    }
  }

  async getBytes(key: string): Promise<Buffer | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.cfg.bucket, Key: this.key(key) }));
      if (out.Body === undefined) return Buffer.alloc(0);
      return Buffer.from(await out.Body.transformToByteArray());
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw s3Error(`read ${key}`, e);
    }
  }

  async stat(key: string): Promise<{ bytes: number } | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.cfg.bucket, Key: this.key(key) }));
      return { bytes: out.ContentLength ?? 0 };
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw s3Error(`stat ${key}`, e);
    }
  }

  async read(key: string, range?: ByteRange): Promise<Readable> {
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.cfg.bucket,
          Key: this.key(key),
          Range: range ? `bytes=${range.start}-${range.end}` : undefined,
        }),
      );
      if (out.Body instanceof Readable) return out.Body;
      return Readable.from(Buffer.from(await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray()));
    } catch (e) {
      if (isMissing(e)) throw new FgsnError('NOT_FOUND', `no stored object ${key}`);
      throw s3Error(`read ${key}`, e);
    }
  }

  async list(prefix: string): Promise<string[]> {
    const Prefix = this.key(prefix.replace(/\/+$/, '')) + '/';
    const strip = this.cfg.prefix ? this.cfg.prefix.replace(/\/+$/, '').length + 1 : 0;
    const out: string[] = [];
    try {
      let token: string | undefined;
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.cfg.bucket, Prefix, ContinuationToken: token }));
        for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key.slice(strip));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (e) {
      throw s3Error(`list ${prefix}`, e);
    }
    return out.sort();
  }

  async deletePrefix(prefix: string): Promise<void> {
    const Prefix = this.key(prefix.replace(/\/+$/, '')) + '/';
    try {
      let token: string | undefined;
      do {
        const page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.cfg.bucket, Prefix, ContinuationToken: token }),
        );
        const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
        if (keys.length > 0) {
          await this.client.send(new DeleteObjectsCommand({ Bucket: this.cfg.bucket, Delete: { Objects: keys } }));
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (e) {
      throw s3Error(`delete ${prefix}`, e);
    }
  }

  async checkWritable(): Promise<void> {
    const key = `.probe/${randomUUID()}`;
    await this.putBytes(key, 'ok');
    await this.deletePrefix('.probe');
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function isMissing(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err?.name === 'NoSuchKey' || err?.name === 'NotFound' || err?.$metadata?.httpStatusCode === 404;
}

function s3Error(what: string, e: unknown): FgsnError {
  return new FgsnError('STORAGE_ERROR', `S3 failed to ${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}
