-- Look at what the pipeline produced.
-- Template values: catalog (kinesis_lab for the bundle's dev target, kinesis_lab_prod for prod).
-- Each layer has its schema: bronze, silver, gold.

-- Rows per table: bronze = silver + quarantine + duplicates dropped in silver
SELECT 'bronze_events' AS table_name, COUNT(*) AS row_count
  FROM `${catalog}`.`bronze`.`bronze_events`
UNION ALL
SELECT 'silver_events', COUNT(*) FROM `${catalog}`.`silver`.`silver_events`
UNION ALL
SELECT 'silver_quarantine', COUNT(*) FROM `${catalog}`.`silver`.`silver_quarantine`
UNION ALL
SELECT 'gold_rate_by_region_year', COUNT(*) FROM `${catalog}`.`gold`.`gold_rate_by_region_year`
UNION ALL
SELECT 'gold_top_countries_latest', COUNT(*) FROM `${catalog}`.`gold`.`gold_top_countries_latest`
UNION ALL
SELECT 'gold_gender_comparison', COUNT(*) FROM `${catalog}`.`gold`.`gold_gender_comparison`
UNION ALL
SELECT 'gold_quarantine_by_rule', COUNT(*) FROM `${catalog}`.`gold`.`gold_quarantine_by_rule`
UNION ALL
SELECT 'gold_aggregate_rates', COUNT(*) FROM `${catalog}`.`gold`.`gold_aggregate_rates`;

-- Why rows were quarantined: one row per broken rule (a row can break several); the pipeline keeps the
-- same numbers in gold_quarantine_by_rule
SELECT broken_rule, COUNT(*) AS quarantined_rows
FROM (
  SELECT explode(broken_rules) AS broken_rule
  FROM `${catalog}`.`silver`.`silver_quarantine`
)
GROUP BY broken_rule
ORDER BY quarantined_rows DESC;

-- A few quarantined rows with their raw line, to see the problem
SELECT broken_rules, error, _raw_line, _source_file
FROM `${catalog}`.`silver`.`silver_quarantine`
LIMIT 10;

-- Gold: the regions with the highest average child labour rate in the latest year
SELECT *
FROM `${catalog}`.`gold`.`gold_rate_by_region_year`
WHERE Year = (SELECT MAX(Year) FROM `${catalog}`.`gold`.`gold_rate_by_region_year`)
ORDER BY avg_rate_percent DESC;
