import { describe, expect, it } from 'vitest';
import { classifyByProvider, compileClassifier, paramValue } from '../../src/plan/classify.js';
import type { Provider } from '../../src/config/schema.js';

const table: [Provider, string, string, string | null, 'read' | 'write'][] = [
  ['s3', 'GET', '/b/k', null, 'read'],
  ['s3', 'HEAD', '/b/k', null, 'read'],
  ['s3', 'OPTIONS', '/b/k', null, 'read'],
  ['s3', 'PUT', '/b/k', null, 'write'],
  ['s3', 'PUT', '/b', null, 'write'],
  ['s3', 'DELETE', '/b/k', null, 'write'],
  ['s3', 'POST', '/b', 'delete', 'write'],
  ['s3', 'POST', '/b/k', 'select&select-type=2', 'read'],
  ['s3', 'POST', '/b/k', 'uploads', 'write'],
  ['s3', 'POST', '/b/k', 'uploadId=abc', 'write'],
  ['s3', 'POST', '/b/k', 'restore', 'write'],
  ['s3', 'POST', '/b', null, 'write'],
  ['s3', 'PATCH', '/b/k', null, 'write'],
  ['s3', 'PROPFIND', '/b/k', null, 'write'],
  ['azure', 'PUT', '/c/blob', 'comp=block&blockid=x', 'write'],
  ['azure', 'PUT', '/c', 'restype=container', 'write'],
  ['azure', 'POST', '/c/blob', 'comp=query', 'read'],
  ['azure', 'POST', '/', 'restype=service&comp=userdelegationkey', 'read'],
  ['azure', 'POST', '/', 'restype=service&comp=batch', 'write'],
  ['azure', 'GET', '/c', 'restype=container&comp=list', 'read'],
  ['gcs', 'POST', '/upload/storage/v1/b/bkt/o', 'uploadType=resumable', 'write'],
  ['gcs', 'POST', '/storage/v1/b', 'project=p', 'write'],
  ['gcs', 'POST', '/storage/v1/b/bkt/o/a/compose', null, 'write'],
  ['gcs', 'POST', '/storage/v1/channels/stop', null, 'read'],
  ['gcs', 'GET', '/storage/v1/b/bkt/o', null, 'read'],
  ['generic', 'POST', '/x', null, 'write'],
  ['generic', 'GET', '/x', null, 'read'],
];

describe('classification', () => {
  it.each(table)('%s %s %s ?%s → %s', (provider, method, path, query, expected) => {
    expect(classifyByProvider(provider, method, path, query)).toBe(expected);
  });

  it('a selectable-looking name is not the select parameter', () => {
    expect(classifyByProvider('s3', 'POST', '/b/k', 'selection=1')).toBe('write');
    expect(classifyByProvider('s3', 'POST', '/b/k', 'x=select')).toBe('write');
  });

  it('upstream overrides come first', () => {
    const classify = compileClassifier('generic', [
      { method: 'POST', path: '/search/**', operation: 'read' },
      { method: 'GET', query: 'export', operation: 'write' },
    ]);
    expect(classify('POST', '/search/users', null)).toBe('read');
    expect(classify('POST', '/other', null)).toBe('write');
    expect(classify('GET', '/x', 'export=1')).toBe('write');
    expect(classify('GET', '/x', null)).toBe('read');
  });

  it('reads query parameters exactly', () => {
    expect(paramValue('a=1&b&c=3', 'b')).toBe('');
    expect(paramValue('a=1&b&c=3', 'c')).toBe('3');
    expect(paramValue('ab=1', 'a')).toBeUndefined();
    expect(paramValue('', 'a')).toBeUndefined();
    expect(paramValue(null, 'a')).toBeUndefined();
  });
});
