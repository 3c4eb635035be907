"""The demo: realistic clinical CSVs in a folder, a folder -> Postgres connector for them, and its run."""

from __future__ import annotations

import csv
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg2 import sql

from flows.store import catalog
from flows.store.config_store import connect, database_url

DEMO_CONNECTOR = "demo: clinical CSVs -> postgres"
DEMO_SCHEMA = "clinical_demo"

_FIRST = ["Ana", "José", "Li", "Fatima", "Olu", "Sven", "Chloë", "Rahul", "Mary-Kate", "Noah", "Zoë", "Ivan"]
_LAST = ["García", "O'Brien", "Nguyen", "Okafor", "Smith", "Müller", "Kowalski", "Haddad", "Jensen", "Rossi"]
_DEPARTMENTS = ["Emergency", "Cardiology", "Oncology", "Pediatrics", "Internal Medicine", "Neurology"]
_DIAGNOSES = [("I10", "Essential hypertension"), ("E11.9", "Type 2 diabetes mellitus"), ("J18.9", "Pneumonia"),
              ("I21.4", "NSTEMI"), ("N39.0", "Urinary tract infection"), ("C50.911", "Malignant neoplasm, breast")]
_LABS = [("2345-7", "Glucose", "mg/dL", 70, 99), ("718-7", "Hemoglobin", "g/dL", 12.0, 17.5),
         ("2160-0", "Creatinine", "mg/dL", 0.6, 1.3), ("2823-3", "Potassium", "mmol/L", 3.5, 5.1),
         ("6690-2", "Leukocytes", "10*3/uL", 4.5, 11.0)]


def write_sample_csvs(folder: Path, patients: int = 200, seed: int = 7) -> dict[str, int]:
    """Write patients.csv, encounters.csv and lab_results.csv; return rows written per table.

    The data is synthetic but shaped like an EHR extract: unicode and apostrophes in names, notes with
    commas, quotes and newlines, missing discharge times (NULL), UTC timestamps, decimal lab values.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"patients": 0, "encounters": 0, "lab_results": 0}
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with (
        open(folder / "patients.csv", "w", newline="", encoding="utf-8") as pf,
        open(folder / "encounters.csv", "w", newline="", encoding="utf-8") as ef,
        open(folder / "lab_results.csv", "w", newline="", encoding="utf-8") as lf,
    ):
        pw, ew, lw = csv.writer(pf), csv.writer(ef), csv.writer(lf)
        pw.writerow(["patient_id", "mrn", "first_name", "last_name", "birth_date", "sex", "postal_code"])
        ew.writerow(["encounter_id", "patient_id", "admitted_at", "discharged_at", "department",
                     "diagnosis_code", "diagnosis", "notes"])
        lw.writerow(["result_id", "encounter_id", "loinc_code", "test_name", "value", "unit",
                     "reference_low", "reference_high", "abnormal", "collected_at"])
        encounter_id = result_id = 0
        for patient_id in range(1, patients + 1):
            birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 80 * 365))
            pw.writerow([patient_id, f"MRN{patient_id:07d}", rng.choice(_FIRST), rng.choice(_LAST),
                         birth.isoformat(), rng.choice("FM"), f"{rng.randrange(10000, 99999)}"])
            counts["patients"] += 1
            for _ in range(rng.randrange(1, 5)):
                encounter_id += 1
                admitted = start + timedelta(minutes=rng.randrange(0, 300 * 24 * 60))
                discharged = admitted + timedelta(hours=rng.randrange(2, 240)) if rng.random() > 0.1 else None
                code, label = rng.choice(_DIAGNOSES)
                note = rng.choice(["", "Stable, follow up in 2 weeks", 'Patient reports "sharp" pain, 7/10',
                                   "Allergic to penicillin;\nmonitor BP", "Transferred from ICU, improving"])
                ew.writerow([encounter_id, patient_id, admitted.isoformat().replace("+00:00", "Z"),
                             discharged.isoformat().replace("+00:00", "Z") if discharged else "",
                             rng.choice(_DEPARTMENTS), code, label, note])
                counts["encounters"] += 1
                for _ in range(rng.randrange(2, 8)):
                    result_id += 1
                    loinc, name, unit, low, high = rng.choice(_LABS)
                    value = round(rng.uniform(low * 0.7, high * 1.3), 2)
                    collected = admitted + timedelta(minutes=rng.randrange(5, 600))
                    lw.writerow([result_id, encounter_id, loinc, name, f"{value:.2f}", unit, low, high,
                                 "true" if not low <= value <= high else "false",
                                 collected.isoformat().replace("+00:00", "Z")])
                    counts["lab_results"] += 1
    return counts


def ensure_demo_connector(folder: Path) -> int:
    """The demo connector's id, registering it (folder -> the config store's own database) if missing."""
    existing = catalog.find_connector(DEMO_CONNECTOR)
    if existing is not None:
        return existing
    source_id = catalog.define_source(
        "demo incoming folder", "filesystem", {"path": str(folder), "file_pattern": "*.csv"}
    )
    destination_id = catalog.define_destination(
        "demo warehouse",
        "postgres",
        {"connection_string": database_url(), "schema": DEMO_SCHEMA, "write_disposition": "replace"},
    )
    return catalog.create_connector(DEMO_CONNECTOR, source_id, destination_id)


def table_counts(schema: str, tables: list[str]) -> dict[str, Any]:
    """Rows now in each table of the demo schema (counted in the database, not taken from dlt)."""
    counts: dict[str, Any] = {}
    with connect() as conn:
        for table in tables:
            query = sql.SQL("SELECT count(*) AS n FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            row = conn.execute(query).fetchone()
            counts[table] = row["n"] if row else None
    return counts
