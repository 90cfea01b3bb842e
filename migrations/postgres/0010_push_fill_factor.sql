-- Room on each page for a row's next version. A claim rewrites a delivery's lease columns, none
-- of them indexed: with free space on its page the new version is a heap-only tuple and no
-- index is written. Applies to pages written from now on; takes no lock that blocks reads or
-- writes.
ALTER TABLE push_deliveries SET (fillfactor = 70);
