"""data/read"""
