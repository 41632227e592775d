"""Tests of sweeper.trial."""
