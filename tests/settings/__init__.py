"""Tests of sweeper.settings."""
