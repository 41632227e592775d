"""Tests of sweeper.study."""
