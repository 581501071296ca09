"""Audit analyzer."""
