"""Tests of sweeper.runtime."""
