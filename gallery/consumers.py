from channels.generic.websocket import AsyncJsonWebsocketConsumer


class TerminalConsumer(AsyncJsonWebsocketConsumer):
    pass
