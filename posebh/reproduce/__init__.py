"""Scripted reproduction of the PoseBH tables (see reproduce/tables/*.toml)."""
