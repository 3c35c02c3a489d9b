"""data/batches"""
