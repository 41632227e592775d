"""Tests of sweeper.records."""
