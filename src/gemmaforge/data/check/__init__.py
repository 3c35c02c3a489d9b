"""data/check"""
