-- The repositories list pages by name and filters by text in the name or
-- the URL (`repos::page`). In a fleet with a repository per host that is
-- tens of thousands of rows, each wide (its sealed secrets): a filtered
-- page through the name index alone looked every row up in the table for
-- its URL (30 ms at 18,901 repositories, docs/benchmarks.md, stop 45).
-- This index covers the filter, the order and the id, so the list picks
-- its page and counts from the index alone, and reads the table only for
-- the rows shown.
CREATE INDEX repositories_name_url ON repositories (name, url_display, id);
