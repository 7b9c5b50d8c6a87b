import { describe, expect, it } from 'vitest';
import { RowCaps } from '../../src/session/row-caps.js';

const cap = (limit: number, key: string | null, fresh = false) => ({ limit, key, tables: ['public.big'], ...(fresh ? { fresh } : {}) });

describe('RowCaps', () => {
  it('forwards rows up to the cap, reports the first row past it, then drops', () => {
    const caps = new RowCaps();
    caps.track(cap(2, null), 0, 1);
    expect([caps.onDataRow(0), caps.onDataRow(0), caps.onDataRow(0), caps.onDataRow(0)]).toEqual(['forward', 'forward', 'exceeded', 'drop']);
  });

  it('replaces the end of an exceeded result with one 54000 error and drops the rest', () => {
    const caps = new RowCaps();
    caps.track(cap(1, null), 0, 1);
    caps.onDataRow(0);
    caps.onDataRow(0);
    const first = caps.onResultMessage(0);
    expect(first).toHaveLength(1);
    expect(first![0]!.subarray(0, 1).toString()).toBe('E');
    expect(first![0]!.toString('latin1')).toContain('54000');
    expect(caps.onResultMessage(0)).toEqual([]);
  });

  it('leaves results alone that stay under the cap, and output outside the capped window', () => {
    const caps = new RowCaps();
    caps.track(cap(5, null), 3, 4);
    expect(caps.onDataRow(2)).toBe('forward'); // an earlier request's rows
    expect(caps.onResultMessage(3)).toBeNull();
  });

  it('carries the count of a portal across requests until it is bound again', () => {
    const caps = new RowCaps();
    caps.track(cap(3, 'portal:p'), 0, 1);
    caps.onDataRow(0);
    caps.onDataRow(0);
    caps.onReady(1);
    caps.track(cap(3, 'portal:p'), 1, 2);
    expect([caps.onDataRow(1), caps.onDataRow(1)]).toEqual(['forward', 'exceeded']);
    caps.onReady(2);
    caps.portalBound('p');
    caps.track(cap(3, 'portal:p'), 2, 3);
    expect(caps.onDataRow(2)).toBe('forward');
  });

  it('starts a cursor count afresh when the cursor is declared again', () => {
    const caps = new RowCaps();
    caps.track(cap(2, 'cursor:c'), 0, 1);
    caps.onDataRow(0);
    caps.onDataRow(0);
    caps.onReady(1);
    caps.track(cap(2, 'cursor:c', true), 1, 2);
    expect(caps.onDataRow(1)).toBe('forward');
  });
});
