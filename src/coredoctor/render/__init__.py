"""Presentation only: text for people, JSON for programs. No decisions are made here."""
